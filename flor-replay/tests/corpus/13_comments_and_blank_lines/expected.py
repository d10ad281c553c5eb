import flordb as flor

epochs = flor.arg("epochs", 3)

# Main loop.
for epoch in flor.loop("epoch", range(epochs)):  # one pass over the data
    flor.log("seed", seed_of(epoch))
    # Shuffle first: the order matters for SGD.

    order = shuffle(data)  # new order every epoch
    flor.log("first", order[0])

    # Then train.
    loss = train(order)


    flor.log("loss", loss)
