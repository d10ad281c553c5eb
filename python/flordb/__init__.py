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

import sys as _sys

from . import errors
from .errors import *  # noqa: F401,F403 - FlorError and its subclasses

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

# The names below come from submodules that pull in json, re, pickle and the
# session machinery (~25 ms). `import flordb` loads them at once, as before.
# `python -m flordb …` (the CLI) needs none of them, so there they load on
# first use instead (PEP 562 module __getattr__): see _cli_start.
_LAZY = ("log", "arg", "loop", "iteration", "checkpointing", "commit", "dataframe", "query", "utils", "checkpoints")


def _load():
    """Binds the API names: the recording API, or in replay mode (a worker
    started by `flor replay`, FLOR_REPLAY set) the same names with the
    replay semantics of flordb/replay.py."""
    import importlib

    # Not `from . import utils`: that asks this module for the attribute
    # first, which would call __getattr__ and so _load again.
    utils, checkpoints, replay = (importlib.import_module(f"{__name__}.{m}") for m in ("utils", "checkpoints", "replay"))
    from ._query import dataframe, query

    if replay.SPEC is not None:
        from .replay import log, arg, loop, iteration, checkpointing, commit
    else:
        from .api import log, arg, loop, iteration, checkpointing, commit
    globals().update(
        _replay=replay, utils=utils, checkpoints=checkpoints, dataframe=dataframe, query=query,
        log=log, arg=arg, loop=loop, iteration=iteration, checkpointing=checkpointing, commit=commit,
    )


def __getattr__(name):
    if name in _LAZY or name == "_replay":
        _load()
        return globals()[name]
    raise AttributeError(f"module 'flordb' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


def skip_rest():
    """True when replay does not need the rest of this outer iteration
    (the replay copy of a script calls it after the new statements)."""
    if "_replay" not in globals():
        _load()
    return _replay.skip_rest()


def _cli_start():
    """True while `python -m flordb` imports this package before running
    flordb.__main__: sys.argv[0] is "-m" until the module is found, and the
    interpreter's own command line (sys.orig_argv, Python 3.10+) names
    flordb as the module. Anything else (a script, `-c`, `-m pkg.train`
    whose package imports flordb, Python 3.9) loads the API at once."""
    if (getattr(_sys, "argv", None) or [""])[0] != "-m":
        return False
    orig = list(getattr(_sys, "orig_argv", ()))[1:]
    i = 0
    while i < len(orig):
        a = orig[i]
        if a == "-m":
            return orig[i + 1 : i + 2] == ["flordb"]
        if a.startswith("-m"):
            return a == "-mflordb"
        if a in ("-X", "-W"):  # interpreter options whose value follows
            i += 2
            continue
        if a == "-c" or not a.startswith("-"):
            return False
        i += 1
    return False


if not _cli_start():
    _load()
