"""checkpointing(**objects): saved at outer-iteration ends, restored in place."""

import json
import random

import numpy as np
import pytest

from conftest import read_back, run_script
from flordb import _checkpoint


class Model:
    """A stand-in with the torch-style state API."""

    def __init__(self):
        self.w = [0.0, 0.0]

    def state_dict(self):
        return {"w": list(self.w)}

    def load_state_dict(self, d):
        self.w = list(d["w"])


def test_restore_writes_into_the_live_objects():
    arr = np.arange(6, dtype=np.float64).reshape(2, 3)
    gen = np.random.default_rng(5)
    d, l, m = {"a": 1}, [1, 2], Model()
    m.w = [1.5, 2.5]
    saved = {k: _checkpoint.dumps(v) for k, v in dict(arr=arr, gen=gen, d=d, l=l, m=m).items()}
    expected_draw = np.random.default_rng(5).random()
    arr_id = id(arr)
    arr[:] = 0
    gen.random()
    d["b"] = 2
    l.append(3)
    m.w = [9.0, 9.0]
    assert _checkpoint.restore(arr, saved["arr"]) is arr and id(arr) == arr_id
    assert arr.tolist() == [[0, 1, 2], [3, 4, 5]]
    _checkpoint.restore(gen, saved["gen"])
    assert gen.random() == expected_draw
    assert _checkpoint.restore(d, saved["d"]) == {"a": 1} and _checkpoint.restore(l, saved["l"]) == [1, 2]
    _checkpoint.restore(m, saved["m"])
    assert m.w == [1.5, 2.5]
    assert _checkpoint.restore(None, _checkpoint.dumps((1, "x"))) == (1, "x")


def test_npy_prefix_is_exactly_what_dumps_writes_before_the_data():
    # Replay restores such arrays straight into their memory: the prefix it
    # expects must be byte for byte what dumps() wrote, and the rest of the
    # checkpoint the array's memory as it lies.
    arrays = [
        np.arange(12, dtype=np.float64).reshape(3, 4),
        np.zeros((0, 5), dtype=np.float32),
        np.array(7, dtype=np.int64),
        np.arange(10, dtype=">i4"),
        np.ones((2, 3, 4), dtype=np.complex64),
        np.array([(1, 2.5)], dtype=[("a", "<i2"), ("b", "<f8")]),
    ]
    for a in arrays:
        prefix = _checkpoint.npy_prefix(a)
        saved = _checkpoint.dumps(a)
        assert prefix is not None and saved[: len(prefix)] == prefix, a.dtype
        assert saved[len(prefix):] == a.tobytes(order="C") and len(saved) == len(prefix) + a.nbytes
    # Arrays whose memory cannot take the data as it lies: restored through a buffer.
    fortran = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    readonly = np.arange(4.0)
    readonly.flags.writeable = False
    for a in [fortran, np.arange(10.0)[::2], readonly, np.array([object()]), np.arange(3.0).view(type("Sub", (np.ndarray,), {})), [1.0], None]:
        assert _checkpoint.npy_prefix(a) is None, repr(a)


def test_rng_states_round_trip():
    random.seed(3)
    np.random.seed(3)
    states = dict(_checkpoint.rng_states())
    a, b = random.random(), np.random.rand()
    for name, data in states.items():
        _checkpoint.restore_rng(name, data)
    assert (random.random(), np.random.rand()) == (a, b)


TRAIN = """
import random
import numpy as np
import flordb as flor

rng = np.random.default_rng(0)
W = np.zeros(4)
history = {"seen": 0}
with flor.checkpointing(W=W, rng=rng, history=history):
    for epoch in flor.loop("epoch", range(4)):
        W += rng.random(4)
        history["seen"] += 1
        flor.log("w_sum", float(W.sum()))
        flor.log("py_draw", random.random())
print("RUN", flor.checkpoints.current_run())
"""


RESTORE = """
import json, random, sys
import numpy as np
import flordb as flor

run, epoch = sys.argv[1], int(sys.argv[2])
W, rng, history = np.ones(4), np.random.default_rng(99), {"other": 1}
flor.checkpoints.restore(run, [("epoch", epoch)], W=W, rng=rng, history=history)
w_sum = float(W.sum())
next_sum = float((W + rng.random(4)).sum())
print("OUT " + json.dumps([w_sum, history, next_sum, random.random()]))
"""


@pytest.mark.parametrize("policy", ["every", "adaptive"])
def test_checkpoints_restore_the_state_of_each_epoch(repo, policy):
    proc = run_script(repo, TRAIN, env={"FLOR_ECHO": "0", "FLOR_CKPT": policy})
    run = next(l.split()[1] for l in proc.stdout.splitlines() if l.startswith("RUN "))
    df = read_back(repo, "flor.dataframe('w_sum', 'py_draw')")
    sums, draws = list(df["w_sum"]), list(df["py_draw"])
    # adaptive: iteration 0 (to measure a checkpoint) and the last one at
    # least; FLOR_CKPT=every: all of them.
    epochs = range(4) if policy == "every" else [0, 3]
    for e in epochs:
        out = run_script(repo, RESTORE, run, str(e), name="restore.py", env={"FLOR_ECHO": "0"})
        line = next(l for l in out.stdout.splitlines() if l.startswith("OUT "))
        w_sum, history, next_sum, py_next = json.loads(line[4:])
        assert w_sum == sums[e]
        assert history == {"seen": e + 1}
        if e + 1 < 4:
            # the restored generators continue exactly as the run did
            assert next_sum == sums[e + 1]
            assert py_next == draws[e + 1]
    if policy == "adaptive":
        missing = run_script(repo, RESTORE, run, "9", name="restore.py", env={"FLOR_ECHO": "0"}, check=False)
        assert missing.returncode != 0 and "CheckpointMissingError" in missing.stderr
