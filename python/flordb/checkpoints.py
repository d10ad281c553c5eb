"""Reading checkpoints back: the bytes of one object of one run at one
loop path, and restoring them into live objects (see ``_checkpoint``)."""

import json

from . import _checkpoint
from . import _native_api as native
from ._native_api import ffi, lib
from ._session import SESSION


def current_run():
    """The run being recorded by this process (``"<tstamp>-<run id>"``), or None."""
    buf = ffi.new("FlorBuffer *")
    native.check(lib.flor_handle_info(SESSION.handle(), buf))
    return json.loads(native.take_buffer(buf))["run"]


def load_bytes(run, loop_path, name):
    """The stored bytes of checkpoint ``name`` of ``run`` at ``loop_path``
    (a list of ``(loop name, 0-based iteration)``, outermost first, e.g.
    ``[("epoch", 3)]``). Raises ``CheckpointMissingError`` when absent."""
    h = SESSION.handle()
    names = [n for n, _ in loop_path]
    ptrs, lens, _keep = native.str_array(names)
    iters = ffi.new("int64_t[]", [int(i) for _, i in loop_path]) if loop_path else ffi.NULL
    rb, ob = run.encode(), name.encode("utf-8")
    out = ffi.new("FlorBuffer *")
    native.check(lib.flor_checkpoint_load(h, rb, len(rb), ptrs, lens, iters, len(names), ob, len(ob), out))
    return native.take_buffer(out)


def load(run, loop_path, name, into=None):
    """Checkpoint ``name`` restored into ``into`` in place (or a new value
    when ``into`` is None and the kind allows it)."""
    return _checkpoint.restore(into, load_bytes(run, loop_path, name))


def restore(run, loop_path, /, with_rng_states=True, **objects):
    """Restores each of ``objects`` (name=live object, as given to
    ``checkpointing``) in place from ``run`` at ``loop_path``, and with
    ``with_rng_states`` the generators of ``random``, numpy and torch that
    were saved with them. Returns the objects."""
    for name, obj in objects.items():
        objects[name] = load(run, loop_path, name, into=obj)
    if with_rng_states:
        import sys

        names = [_checkpoint.RNG_RANDOM]
        if "numpy" in sys.modules:
            names.append(_checkpoint.RNG_NUMPY)
        if "torch" in sys.modules:
            names.append(_checkpoint.RNG_TORCH)
        for n in names:
            try:
                _checkpoint.restore_rng(n, load_bytes(run, loop_path, n))
            except KeyError:
                pass
    return objects
