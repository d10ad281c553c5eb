"""Replay benchmark workload (issue 7): a deterministic numpy two-layer
network on synthetic data whose epoch takes >= 1 s on a 2-core machine.
No download; the data comes from a seeded generator.

    python train_slow.py --kwargs epochs=10
"""
import numpy as np

import flordb as flor

epochs = flor.arg("epochs", 10)
lr = flor.arg("lr", 0.05)
seed = flor.arg("seed", 0)
width = flor.arg("width", 768)
steps = flor.arg("steps", 40)

rng = np.random.default_rng(seed)
D, B = 256, 256
X = rng.standard_normal((steps * B, D))
y = (X[:, :8].sum(axis=1) > 0).astype(np.float64)

W = rng.standard_normal((D, width)) / np.sqrt(D)
b = np.zeros(width)
V = rng.standard_normal((width, width)) / np.sqrt(width)

with flor.checkpointing(W=W, b=b, V=V, rng=rng):
    for epoch in flor.loop("epoch", range(epochs)):
        perm = rng.permutation(len(X))
        for step in flor.loop("step", range(steps)):
            idx = perm[step * B:(step + 1) * B]
            xb, yb = X[idx], y[idx]
            h = np.tanh(xb @ W + b)
            g = np.tanh(h @ V)
            out = g.mean(axis=1)
            err = out - yb
            dg = (err[:, None] / width) * (1.0 - g * g)
            dV = h.T @ dg / B
            dh = (dg @ V.T) * (1.0 - h * h)
            W -= lr * (xb.T @ dh / B)
            b -= lr * dh.mean(axis=0)
            V -= lr * dV
            flor.log("loss", float((err * err).mean()))
        flor.log("v_norm", float(np.linalg.norm(V)))
