import flordb as flor

x = load()
y = model(x)