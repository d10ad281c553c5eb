"""MNIST-style training with PyTorch."""
import torch
import torch.nn as nn

import flordb as flor
from data import loader


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


net = Net()
optimizer = torch.optim.SGD(net.parameters(), lr=flor.arg("lr", 0.01))
loss_fn = nn.CrossEntropyLoss()

with flor.checkpointing(model=net, optimizer=optimizer):
    for epoch in flor.loop("epoch", range(flor.arg("epochs", 5))):
        net.train()
        for data, target in flor.loop("step", loader):
            optimizer.zero_grad()
            loss = loss_fn(net(data), target)
            loss.backward()
            flor.log("grad_norm", net.fc1.weight.grad.norm().item())
            optimizer.step()
            flor.log("loss", loss.item())
