import flordb as flor

x = load()
y = model(x)
flor.log("y_mean", y.mean())