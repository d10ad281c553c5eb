import torch

import flordb as flor


def accuracy(logits, y):
    return (logits.argmax(1) == y).float().mean().item()


def train(model, loader, optimizer):
    for epoch in flor.loop("epoch", range(3)):
        for x, y in loader:
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
        flor.log("loss", loss.item())
