import flordb as flor

epochs = flor.arg("epochs", 3)

# Main loop.
for epoch in flor.loop("epoch", range(epochs)):  # one pass over the data
    # Shuffle first: the order matters for SGD.

    order = shuffle(data)  # new order every epoch

    # Then train.
    loss = train(order)


    flor.log("loss", loss)
