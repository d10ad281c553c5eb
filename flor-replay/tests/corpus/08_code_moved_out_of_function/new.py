"""Training-shaped loops: run-level args, a value per step, a value per epoch.

Run twice:  python nested_loops.py --kwargs lr=0.01 epochs=3
            python nested_loops.py --kwargs lr=0.02 epochs=2 batch_size=16
Then:       flor.dataframe("lr", "batch_size", "loss", "acc")
"""
import flordb as flor

lr = flor.arg("lr", 0.001)
batch_size = flor.arg("batch_size", 32)
epochs = flor.arg("epochs", 2)

for epoch in flor.loop("epoch", range(epochs)):
    flor.log("lr_epoch", lr / (1 + epoch))
    for step in flor.loop("step", range(4)):
        flor.log("loss", round(1.0 / (1 + epoch * 4 + step) + lr, 6))
    flor.log("acc", round(0.5 + 0.1 * epoch + lr, 6))
