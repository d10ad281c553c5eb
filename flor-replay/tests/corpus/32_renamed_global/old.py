import flordb as flor

top = 0.0


def update(acc):
    global top
    if acc > top:
        top = acc
    return top


for epoch in flor.loop("epoch", range(5)):
    update(evaluate(epoch))
