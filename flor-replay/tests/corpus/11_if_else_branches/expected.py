import flordb as flor
from train import train_one_epoch, evaluate

lr = flor.arg("lr", 0.1)
best = float("inf")
for epoch in flor.loop("epoch", range(20)):
    val_loss = evaluate()
    if val_loss < best:
        flor.log("improvement", best - val_loss)
        best = val_loss
        patience = 0
    else:
        patience += 1
        lr = lr * 0.5
        flor.log("lr_halved", lr)
    train_one_epoch(lr)
