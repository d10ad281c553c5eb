import flordb as flor

epochs = flor.arg("epochs", 3)

for epoch in flor.loop("epoch", range(epochs)):
    flor.log("seed", seed_of(epoch))
    order = shuffle(data)
    flor.log("first", order[0])
    loss = train(order)
    flor.log("loss", loss)
