"""Training-shaped loops, now in a function."""
import flordb as flor


def train(lr, epochs):
    for epoch in flor.loop("epoch", range(epochs)):
        flor.log("lr_epoch", lr / (1 + epoch))
        for step in flor.loop("step", range(4)):
            flor.log("loss", round(1.0 / (1 + epoch * 4 + step) + lr, 6))
        flor.log("acc", round(0.5 + 0.1 * epoch + lr, 6))


if __name__ == "__main__":
    lr = flor.arg("lr", 0.001)
    batch_size = flor.arg("batch_size", 32)
    epochs = flor.arg("epochs", 2)
    train(lr, epochs)
