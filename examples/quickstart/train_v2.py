"""Softmax regression on scikit-learn's bundled digits. Version 2 of the demo
script: the same training, refactored (renamed weights, a helper function).

    python train.py --kwargs lr=0.2 epochs=8
"""
import numpy as np
from sklearn.datasets import load_digits

import flordb as flor

lr = flor.arg("lr", 0.5)
epochs = flor.arg("epochs", 8)
batch_size = flor.arg("batch_size", 32)
seed = flor.arg("seed", 0)

digits = load_digits()
X, y = digits.data / 16.0, digits.target
rng = np.random.default_rng(seed)
order = rng.permutation(len(X))
X, y = X[order], y[order]
split = int(0.8 * len(X))
X_train, y_train, X_val, y_val = X[:split], y[:split], X[split:], y[split:]

weights = np.zeros((X.shape[1], 10))
bias = np.zeros(10)


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def predict(x):
    return softmax(x @ weights + bias)


with flor.checkpointing(W=weights, b=bias, rng=rng):
    for epoch in flor.loop("epoch", range(epochs)):
        perm = rng.permutation(len(X_train))
        for start in flor.loop("step", range(0, len(X_train), batch_size)):
            idx = perm[start:start + batch_size]
            xb, yb = X_train[idx], y_train[idx]
            p = predict(xb)
            p[np.arange(len(yb)), yb] -= 1.0
            weights -= lr * (xb.T @ p / len(yb))
            bias -= lr * p.mean(axis=0)
            loss = -np.log(predict(xb)[np.arange(len(yb)), yb] + 1e-12).mean()
            flor.log("loss", float(loss))
        acc = float((predict(X_val).argmax(axis=1) == y_val).mean())
        flor.log("val_acc", acc)
