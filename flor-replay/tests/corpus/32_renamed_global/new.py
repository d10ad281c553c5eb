import flordb as flor

best_acc = 0.0


def update(acc):
    global best_acc
    if acc > best_acc:
        best_acc = acc
    flor.log("best_acc", best_acc)
    return best_acc


for epoch in flor.loop("epoch", range(5)):
    update(evaluate(epoch))
