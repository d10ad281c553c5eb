"""flordb: FlorDB rebuilt in Rust. ``import flordb as flor``.

A drop-in for FlorDB 4.0.1's API (DESIGN.md §5)::

    import flordb as flor

    lr = flor.arg("lr", 0.01)                 # --kwargs lr=0.1
    with flor.checkpointing(model=model):
        for epoch in flor.loop("epoch", range(10)):
            for step in flor.loop("step", range(100)):
                flor.log("loss", train_step())
    flor.dataframe("lr", "loss")              # pandas, one column per name

Importing records nothing and works outside a git repository; the first
record starts a run, which is committed at exit (and after each IPython
cell). Errors raise :class:`FlorError` subclasses (``flordb.errors``).
"""

from . import errors, utils, checkpoints
from .errors import *  # noqa: F401,F403 - FlorError and its subclasses
from .api import log, arg, loop, iteration, checkpointing, commit
from ._query import dataframe, query

__version__ = "0.1.0"

__all__ = [
    "log",
    "arg",
    "loop",
    "iteration",
    "checkpointing",
    "commit",
    "dataframe",
    "query",
    "utils",
    "checkpoints",
    "errors",
] + [n for n in errors.__all__ if n != "error_for"]

# Replay mode (a worker started by `flor replay`, FLOR_REPLAY set): the same
# names, with the replay semantics of flordb/replay.py.
from . import replay as _replay  # noqa: E402


def skip_rest():
    """True when replay does not need the rest of this outer iteration
    (the replay copy of a script calls it after the new statements)."""
    return _replay.skip_rest()


if _replay.SPEC is not None:
    from .replay import log, arg, loop, iteration, checkpointing, commit  # noqa: E402,F811
