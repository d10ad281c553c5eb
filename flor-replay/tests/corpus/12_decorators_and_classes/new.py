from dataclasses import dataclass

import flordb as flor


def timed(fn):
    return fn


@dataclass
class Trainer:
    lr: float = 0.1
    epochs: int = 3

    @timed
    def fit(self, data):
        for epoch in flor.loop("epoch", range(self.epochs)):
            total = 0.0
            for x in data:
                total += self.step(x)
            flor.log("mean_loss", total / len(data))
            flor.log("total", total)

    @staticmethod
    def step(x):
        return x * 0.5


Trainer().fit([1.0, 2.0, 3.0])
