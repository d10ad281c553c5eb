import torch

import flordb as flor


def accuracy(logits, y):
    return (logits.argmax(1) == y).float().mean().item()


@torch.no_grad()
def grad_norm(model):
    total = 0.0
    for p in model.parameters():
        if p.grad is not None:
            total += p.grad.norm().item() ** 2
    return total ** 0.5


def train(model, loader, optimizer):
    for epoch in flor.loop("epoch", range(3)):
        for x, y in loader:
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            flor.log("grad_norm", grad_norm(model))
            optimizer.step()
        flor.log("loss", loss.item())
