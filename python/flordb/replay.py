"""Replay mode: what a worker started by ``flor replay`` does (DESIGN.md §7).

The coordinator (``flor replay`` / ``python -m flordb replay``) runs the
propagated copy of an old script with ``FLOR_REPLAY=<spec.json>``. Then, in
this process:

* ``arg`` returns the value the replayed run recorded;
* ``log`` records only the names being replayed, with ``source = replay``,
  under the original run's ``tstamp`` (loop context ids are derived from the
  loop path, so the records join the original frames), and nothing while an
  iteration runs only to rebuild state;
* the outermost ``loop`` follows ``flor_replay::plan::schedule``: restore the
  nearest checkpoint, re-run gap iterations with logging off, run each
  selected iteration, and print progress;
* in an iteration where an earlier, interrupted replay already recorded the
  first values of a name (``recorded`` in the spec), those are not recorded
  again;
* ``skip_rest()`` is true in a selected iteration when the rest of the outer
  body is not needed (the replay copy has ``if skip_rest(): continue`` after
  the new statements);
* in ``prefix`` mode the script stops at the outer loop; in ``suffix`` mode
  the loop restores the last checkpoint and runs no iteration.

Checkpoints are never written here: the run's database belongs to the
coordinator, which writes one recipe file per unit (for each object
restored, where its chunks lie in the run's pack files); this worker reads
and verifies the bytes from the packs itself, in one of two ways:

* when a core is spare for each worker (``decode_threads`` in the spec,
  the cores divided by the workers running at once, is 2 or more: at most
  half as many workers as cores) and the worker runs whole iterations
  between restores, on a native thread that reads one restore ahead from
  the moment this module is imported (``flor_prefetch_start``), so the
  reading overlaps the script's start-up and its iterations;
* otherwise when the object is restored: a numpy array straight into its
  own memory (``flor_checkpoint_load_recipe_to``: no buffer of the
  model's size, no copy), anything else through a buffer
  (``flor_checkpoint_load_recipe``). With no spare core (the default is
  one worker per core) a reading thread would only take CPU from the
  other workers; when the rest of the outer body is skipped, restores
  follow one another with nothing to overlap, and restoring in place was
  the faster of the two (BENCHMARKS.md, replay, stop 14: 9 of 13 pairs,
  ~4%, hot page cache; even with the page cache dropped).

``FLOR_REPLAY_PREFETCH=1`` forces the first way and ``=0`` the second
(for example to keep a large model's worker from holding a second copy of
it while it reads ahead).

At exit the worker prints its phase times (``FLOR-REPLAY-TIMES {json}``)
for ``flor replay --timings``.
"""

import collections
import json
import os
import sys
import time

_T = {"imported": time.time(), "restore_s": 0.0}
from contextlib import contextmanager

from . import _checkpoint
from . import _native_api as native
from ._native_api import ffi, lib
from .api import _loop_text

PROGRESS = "FLOR-REPLAY-PROGRESS"
TIMES = "FLOR-REPLAY-TIMES"
SPEC_VERSION = 4


def _load_spec():
    path = os.environ.get("FLOR_REPLAY")
    if not path:
        return None
    with open(path, encoding="utf-8") as f:
        spec = json.load(f)
    if spec.get("version") != SPEC_VERSION:
        raise RuntimeError(f"flordb: replay spec {path} has version {spec.get('version')!r}, expected {SPEC_VERSION}")
    return spec


SPEC = _load_spec()
NAMES = frozenset(SPEC["names"]) if SPEC else frozenset()

_handle = None
_ids = {}
_layers = []
_objects = {}
_suppress = False
_selected_now = False
_warned_args = set()
_skip = {}  # name -> values still to skip in this iteration (already recorded)


def _times():
    _T["exit"] = time.time()
    print(f"{TIMES} {json.dumps(_T)}", flush=True)


if SPEC:
    import atexit

    atexit.register(_times)  # registered first: runs after _close


def _h():
    global _handle
    if _handle is None:
        out = ffi.new("FlorHandle **")
        root = SPEC["project_root"].encode()
        fname = SPEC["filename"].encode()
        native.check(lib.flor_open_replay(root, fname, SPEC["tstamp"], int(SPEC["run_id"], 16), out))
        _handle = out[0]
        import atexit

        atexit.register(_close)
    return _handle


def _close():
    global _handle
    if _handle is not None:
        _T["commit"] = time.time()
        done = ffi.new("bool *")
        try:
            native.check(lib.flor_commit(_handle, done))
        except Exception as e:  # report, never raise at exit
            sys.stderr.write(f"flordb: replay commit failed: {e}\n")
        lib.flor_free(_handle)
        _handle = None


def skip_rest():
    """True when the rest of this outer iteration's body is not needed."""
    return _selected_now and bool(SPEC and SPEC.get("skip_rest"))


def log(name, value):
    """Records ``value`` when ``name`` is being replayed; returns ``value``."""
    if name in NAMES and not _suppress:
        if _skip.get(name):
            _skip[name] -= 1  # recorded by an earlier replay
            return value
        from .api import _log_other

        h = _h()
        nid = _ids.get(name)
        if nid is None:
            b = name.encode("utf-8")
            out = ffi.new("uint32_t *")
            native.check(lib.flor_name_intern(h, b, len(b), out))
            nid = _ids[name] = out[0]
        st = _log_other(h, nid, value)
        if st:
            raise native.error(st)
    return value


def arg(name, default=None):
    """The value the replayed run recorded for ``name`` (the default, with a
    warning, for an argument added after that run)."""
    args = SPEC.get("args", {})
    if name in args:
        v = args[name]
        if isinstance(default, tuple) and isinstance(v, list):
            v = tuple(v)
        elif isinstance(default, float) and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        return v
    if name not in _warned_args:
        _warned_args.add(name)
        sys.stderr.write(f"flordb: replay: flor.arg({name!r}) was not recorded by the replayed run; using its default {default!r}\n")
    return default


@contextmanager
def checkpointing(**objects):
    """Registers the objects that replay restores from checkpoints."""
    _objects.update(objects)
    try:
        yield
    finally:
        for k in objects:
            _objects.pop(k, None)


_prefetch = None  # native reader of the restores' checkpoints, in schedule order
_prefetch_queue = collections.deque()  # their recipe indices, not yet taken


def _restore_indices():
    """The recipe indices this worker restores, in the order it restores them."""
    mode = SPEC["mode"]
    if mode == "suffix":
        its = SPEC["checkpoints"][-1:]
    elif mode == "iterations":
        steps = _schedule(SPEC["iterations"], SPEC["checkpoints"], bool(SPEC.get("skip_rest")))
        its = [i for kind, i in steps if kind == "restore"]
    else:
        return [], 0
    groups = [[k for _, k in SPEC["objects"][str(i)]] for i in its]
    return [k for g in groups for k in g], max((len(g) for g in groups), default=0)


def _decode_threads():
    """Threads to decode one large checkpoint with (the spec's; 0: one per core)."""
    return int(SPEC.get("decode_threads") or 0)


def _reads_ahead(spec, forced):
    """Whether a worker with ``spec`` reads its checkpoints ahead on a
    native thread: ``forced`` (``FLOR_REPLAY_PREFETCH``) ``"1"`` or ``"0"``
    decides; otherwise only with a core to spare (``decode_threads`` >= 2)
    and whole iterations to overlap (not ``skip_rest``). See the module
    docs."""
    if forced in ("0", "1"):
        return forced == "1"
    return int(spec.get("decode_threads") or 0) >= 2 and not spec.get("skip_rest")


def _start_prefetch():
    """Starts reading the checkpoints to restore on a native thread, one
    restore ahead, while the script starts up and runs its iterations."""
    global _prefetch
    _T["restores"] = "in place"
    if not _reads_ahead(SPEC, os.environ.get("FLOR_REPLAY_PREFETCH", "").strip()):
        return  # restores read when needed, in place (see the module docs)
    order, ahead = _restore_indices()
    if not order or order != list(range(len(order))):
        return  # restores read each checkpoint when needed instead
    out = ffi.new("FlorPrefetch **")
    st = lib.flor_prefetch_start(os.fsencode(SPEC["recipes"]), _decode_threads(), ahead, out)
    if st != native.OK:
        return  # as above
    _prefetch = out[0]
    _T["restores"] = "read ahead"
    _prefetch_queue.extend(order)
    import atexit

    atexit.register(_stop_prefetch)


def _stop_prefetch():
    global _prefetch
    if _prefetch is not None:
        lib.flor_prefetch_free(_prefetch)
        _prefetch = None


def _restore_one(name, index):
    """Restores object ``name`` from checkpoint ``index`` of the recipe file
    (prefetched, or read now), read from the packs into a native buffer and
    restored from it without another copy (the buffer is freed, or handed
    back to the prefetch thread, before returning: nothing may keep a view
    of it)."""
    prefetched = _prefetch is not None and _prefetch_queue and _prefetch_queue[0] == index
    if not prefetched and name in _objects and _restore_in_place(_objects[name], index):
        return
    out = ffi.new("FlorBuffer *")
    if prefetched:
        _prefetch_queue.popleft()
        native.check(lib.flor_prefetch_next(_prefetch, out))
    else:
        native.check(lib.flor_checkpoint_load_recipe(os.fsencode(SPEC["recipes"]), index, _decode_threads(), out))
    try:
        data = ffi.buffer(out.data, out.len) if out.len else b""
        if name in _checkpoint.RNG_NAMES:
            _checkpoint.restore_rng(name, data)
        elif name in _objects:
            restored = _checkpoint.restore(_objects[name], data)
            if restored is not _objects[name]:
                raise RuntimeError(
                    f"flordb: replay cannot restore {name!r} in place (a {type(_objects[name]).__name__}); "
                    "checkpoint objects with state_dict(), numpy arrays, dicts, lists or objects with a __dict__"
                )
    finally:
        data = None
        if prefetched and _prefetch is not None:
            lib.flor_prefetch_recycle(_prefetch, out)  # read a later checkpoint into it
        else:
            lib.flor_buffer_free(out)


def _restore_in_place(obj, index):
    """Restores checkpoint ``index`` straight into the memory of numpy array
    ``obj``; False (``obj`` untouched) when ``obj`` is not such an array or
    the checkpoint was saved from one of another shape or dtype."""
    prefix = _checkpoint.npy_prefix(obj)
    if prefix is None:
        return False
    loaded = ffi.new("bool *")
    dest = ffi.from_buffer("uint8_t[]", obj, require_writable=True)
    native.check(
        lib.flor_checkpoint_load_recipe_to(
            os.fsencode(SPEC["recipes"]), index, _decode_threads(),
            prefix, len(prefix), dest, obj.nbytes, loaded,
        )
    )
    return bool(loaded[0])


def _restore(iteration):
    """Restores the objects and RNG states checkpointed at the end of
    ``iteration`` in place."""
    t0 = time.time()
    for name, index in SPEC["objects"].get(str(iteration), []):
        _restore_one(name, index)
    _T["restore_s"] += time.time() - t0


def _schedule(selected, checkpoints, skip):
    """Mirror of ``flor_replay::plan::schedule``: ('restore'|'gap'|'selected', i)."""
    out, state = [], -1
    for i in selected:
        target = i - 1
        if state != target:
            c = max((c for c in checkpoints if c <= target), default=None)
            if c is not None and (state is None or c > state):
                out.append(("restore", c))
                state = c
            start = -1 if state is None else state
            out.extend(("gap", g) for g in range(start + 1, i))
        out.append(("selected", i))
        state = None if skip else i
    return out


def _native_iter(h, i, text):
    """Starts iteration ``i`` (0-based) of the innermost loop, with the
    iterated value's text or None."""
    if text is None:
        native.check(lib.flor_loop_iterate(h, i, ffi.NULL, 0))
    else:
        tb = text.encode("utf-8", "surrogatepass")
        native.check(lib.flor_loop_iterate(h, i, tb, len(tb)))


def loop(name, iterable):
    """The loop in replay mode (see the module docs)."""
    global _suppress, _selected_now
    outer = not _layers
    h = _h()
    bname = name.encode("utf-8")
    native.check(lib.flor_loop_enter(h, bname, len(bname)))
    _layers.append(name)
    saved = _suppress
    try:
        if not outer:
            for i, item in enumerate(iterable):
                _native_iter(h, i, _loop_text(item))
                yield item
            return
        _T["loop"] = time.time()
        mode = SPEC["mode"]
        if mode == "prefix":
            raise SystemExit(0)  # the statements sit before the loop: done
        items = list(iterable)
        if mode == "suffix":
            if SPEC["checkpoints"]:
                _restore(SPEC["checkpoints"][-1])
            return
        steps = _schedule(SPEC["iterations"], SPEC["checkpoints"], bool(SPEC.get("skip_rest")))
        recorded = SPEC.get("recorded") or {}
        done = 0
        for kind, i in steps:
            if kind == "restore":
                _restore(i)
                continue
            if i >= len(items):
                break
            _suppress = saved or kind == "gap"
            _selected_now = kind == "selected"
            _skip.clear()
            if kind == "selected":
                _skip.update(recorded.get(str(i), {}))
            _native_iter(h, i, _loop_text(items[i]))
            yield items[i]
            _selected_now = False
            _skip.clear()
            if kind == "selected":
                done += 1
                print(f"{PROGRESS} {done}", flush=True)
        _T["loop_end"] = time.time()
    finally:
        _suppress = saved
        _selected_now = False
        _layers.pop()
        native.check(lib.flor_loop_exit(h, bname, len(bname)))


@contextmanager
def iteration(name, idx, value=None):
    """One non-loop iteration, in replay mode (context only)."""
    h = _h()
    bname = name.encode("utf-8")
    native.check(lib.flor_loop_enter(h, bname, len(bname)))
    _native_iter(h, int(idx or 0), str(value) if value is not None else None)
    _layers.append(name)
    try:
        yield
    finally:
        _layers.pop()
        native.check(lib.flor_loop_exit(h, bname, len(bname)))


def commit():
    """Replay commits once, at exit."""


if SPEC:
    _start_prefetch()
