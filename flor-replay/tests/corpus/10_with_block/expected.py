import numpy as np
import torch

import flordb as flor
from model import Net, loaders

model = Net()
train_loader, val_loader = loaders(batch_size=64)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

for epoch in flor.loop("epoch", range(10)):
    model.train()
    for x, y in train_loader:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in val_loader:
            logits = model(x)
            flor.log("val_entropy", torch.distributions.Categorical(logits=logits).entropy().mean().item())
            correct += (logits.argmax(1) == y).sum().item()
    flor.log("val_acc", correct / len(val_loader.dataset))
