import flordb as flor
from train import train_one_epoch, evaluate

lr = flor.arg("lr", 0.1)
best = float("inf")
for epoch in flor.loop("epoch", range(20)):
    val_loss = evaluate()
    if val_loss < best:
        best = val_loss
        patience = 0
    else:
        patience += 1
        lr = lr * 0.5
    train_one_epoch(lr)
