"""The recording API: ``log``, ``arg``, ``loop``, ``iteration``,
``checkpointing``, ``commit`` (FlorDB 4.0.1's API, DESIGN.md §5)."""

import json
import numbers
import os
import sys
import time
from contextlib import contextmanager

from . import _checkpoint
from . import _native_api as native
from ._native_api import ffi, lib
from ._session import SESSION, parse_kwargs, ORIGINAL_ARGV
from .errors import ArgumentError

_ECHO = os.environ.get("FLOR_ECHO", "1").strip().lower() not in ("0", "false", "no", "off")

# name -> interned id (the native side keeps the names; the hot path passes ids).
_ids = {}
# The handle once open and recording (None before and after a refusal).
_H = None
# Open loops, outermost first: [name, text shown in the echo].
_layers = []
# Objects registered by `checkpointing`, name -> object.
_ckpt_objects = {}

_f64 = lib.flor_log_f64
_i64 = lib.flor_log_i64
_bool = lib.flor_log_bool
_str = lib.flor_log_str

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _write(line):
    try:
        from tqdm import tqdm

        tqdm.write(line)
    except ImportError:
        print(line)


def _echo(name, value):
    if _layers:
        prefix = ", ".join(f"{n}: {d}" for n, d in _layers)
        _write(f"{prefix}, {name}: {value}")
    else:
        _write(f"{name}: {value}")


def _recording_handle():
    """The handle, or None when recording was refused."""
    global _H
    if _H is None and SESSION.recording:
        _H = SESSION.handle()
    return _H


def _status(st):
    """Handles a failed native status: a refusal outside git stops recording
    (one line on stderr); anything else raises."""
    global _H
    if st == native.NOT_A_REPOSITORY:
        if SESSION.recording:
            SESSION.refuse(st)
        _H = None
        _ids.clear()
        return
    raise native.error(st)


def _intern(name):
    h = _recording_handle()
    if h is None:
        return None
    if not isinstance(name, str):
        raise TypeError(f"flor.log: the name must be a str, not {type(name).__name__}")
    b = name.encode("utf-8")
    out = ffi.new("uint32_t *")
    native.check(lib.flor_name_intern(h, b, len(b), out))
    _ids[name] = out[0]
    return out[0]


def _log_other(h, nid, value):
    """The typed call for a value that is not exactly float/int/bool/str:
    numpy scalars and 0-d arrays/tensors by their Python value, lists and
    dicts as JSON, anything else as its repr."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        try:
            value = value.item()
        except (TypeError, ValueError, RuntimeError):
            pass
    if isinstance(value, bool) or type(value).__name__ in ("bool_", "bool"):
        return _bool(h, nid, bool(value))
    if isinstance(value, numbers.Integral):
        v = int(value)
        if _INT64_MIN <= v <= _INT64_MAX:
            return _i64(h, nid, v)
        b = str(v).encode()
        return lib.flor_log_json(h, nid, b, len(b))
    if isinstance(value, numbers.Real):
        return _f64(h, nid, float(value))
    if isinstance(value, str):
        b = value.encode("utf-8", "surrogatepass")
        return _str(h, nid, b, len(b))
    if value is None or isinstance(value, (list, tuple, dict)):
        try:
            b = json.dumps(value, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError):
            b = None
        if b is not None:
            return lib.flor_log_json(h, nid, b, len(b))
    b = repr(value).encode("utf-8", "surrogatepass")
    return lib.flor_log_repr(h, nid, b, len(b))


def log(name, value):
    """Records ``value`` under ``name`` in the current loop context and
    returns ``value`` (so it can wrap an expression).

    ints, floats, bools and strings keep their type; lists and dicts are
    stored as JSON; anything else as its ``repr``, marked so. Echoed as
    ``name: value`` with the loop position unless ``FLOR_ECHO=0``.
    """
    nid = _ids.get(name)
    if nid is None:
        nid = _intern(name)
    if nid is not None:
        t = type(value)
        if t is float:
            st = _f64(_H, nid, value)
        elif t is int:
            st = _i64(_H, nid, value) if _INT64_MIN <= value <= _INT64_MAX else _log_other(_H, nid, value)
        elif t is str:
            b = value.encode("utf-8", "surrogatepass")
            st = _str(_H, nid, b, len(b))
        elif t is bool:
            st = _bool(_H, nid, value)
        else:
            st = _log_other(_H, nid, value)
        if st:
            _status(st)
    if _ECHO:
        _echo(name, value)
    return value


def _py_cast(name, text, default):
    """Casts ``--kwargs`` text to the default's type without the native
    side (used only once recording was refused); same rules."""
    try:
        if isinstance(default, bool):
            low = text.strip().lower()
            if low in ("true", "1", "yes", "y", "t"):
                return True
            if low in ("false", "0", "no", "n", "f"):
                return False
            raise ValueError(text)
        if isinstance(default, numbers.Integral):
            return int(text.strip())
        if isinstance(default, numbers.Real):
            return float(text.strip())
        if isinstance(default, (list, tuple)):
            t = text.strip()
            if t.startswith("["):
                items = json.loads(t)
            else:
                items = [s.strip() for s in t.split(",")] if t else []
                if default:
                    proto = default[0]
                    items = [_py_cast(name, s, proto) for s in items]
            return type(default)(items) if isinstance(default, tuple) else items
    except (ValueError, json.JSONDecodeError):
        raise ArgumentError(
            f"argument `{name}`: {text!r} is not a valid {type(default).__name__} (the type of its default)"
        ) from None
    return text


def _arg_native(h, name, default):
    b = name.encode("utf-8")
    if isinstance(default, bool) or type(default).__name__ in ("bool_", "bool"):
        out = ffi.new("bool *")
        return lib.flor_arg_bool(h, b, len(b), bool(default), out), lambda: bool(out[0])
    if isinstance(default, numbers.Integral):
        out = ffi.new("int64_t *")
        return lib.flor_arg_i64(h, b, len(b), int(default), out), lambda: int(out[0])
    if isinstance(default, numbers.Real):
        out = ffi.new("double *")
        return lib.flor_arg_f64(h, b, len(b), float(default), out), lambda: float(out[0])
    if isinstance(default, (list, tuple)):
        d = json.dumps(list(default)).encode("utf-8")
        out = ffi.new("FlorBuffer *")
        kind = type(default)

        def value():
            items = json.loads(native.take_buffer(out).decode("utf-8"))
            return kind(items) if kind is tuple else items

        return lib.flor_arg_json(h, b, len(b), d, len(d), out), value
    d = str(default).encode("utf-8")
    out = ffi.new("FlorBuffer *")
    return lib.flor_arg_str(h, b, len(b), d, len(d), out), lambda: native.take_buffer(out).decode("utf-8")


def arg(name, default=None):
    """The value of argument ``name``: ``--kwargs name=…`` from the command
    line cast to the type of ``default`` (bool, int, float, str, list:
    ``tags=a,b`` gives ``['a', 'b']``), else ``default``. Logged at the
    current context. Without a default, the command-line text is required.
    """
    h = _recording_handle()
    given = parse_kwargs(ORIGINAL_ARGV)
    if default is None:
        if name not in given:
            raise ArgumentError(
                f"flor.arg({name!r}) has no default and no value was supplied. Give it one -- "
                f"flor.arg({name!r}, <value>) -- or pass --kwargs {name}=<value> on the command line."
            )
        default = ""
    if h is not None:
        st, value = _arg_native(h, name, default)
        if st == native.OK:
            v = value()
            if _ECHO:
                _echo(name, v)
            return v
        _status(st)
    # Not recording: same cast, nothing stored.
    v = _py_cast(name, given[name], default) if name in given else default
    if _ECHO:
        _echo(name, v)
    return v


def _loop_text(item):
    """The iterated value's text, as FlorDB records it: ``str(item)`` when
    the item is JSON-serializable, else None (the index is shown)."""
    t = type(item)
    if t is int or t is str or t is float or t is bool or item is None:
        return str(item)
    try:
        json.dumps(item)
    except (TypeError, ValueError, OverflowError):
        return None
    return str(item)


def _with_last(iterable):
    """Yields (item, is_last) by looking one item ahead."""
    it = iter(iterable)
    try:
        prev = next(it)
    except StopIteration:
        return
    for item in it:
        yield prev, False
        prev = item
    yield prev, True


def _iterate(h, index, text):
    """Starts iteration ``index`` natively; True when recording stopped."""
    if text is None:
        st = lib.flor_loop_iterate(h, index, ffi.NULL, 0)
    else:
        tb = text.encode("utf-8", "surrogatepass")
        st = lib.flor_loop_iterate(h, index, tb, len(tb))
    if st:
        _status(st)
        return True
    return False


def _end_outer_iteration(h, index, is_last, seconds):
    due = ffi.new("bool *")
    native.check(lib.flor_checkpoint_due(h, index, is_last, seconds, due))
    if not due[0]:
        return
    t0 = time.perf_counter()
    for obj_name, data in _checkpoint.snapshot(_ckpt_objects):
        b = obj_name.encode("utf-8")
        native.check(lib.flor_checkpoint_save(h, b, len(b), data, len(data)))
    native.check(lib.flor_checkpoint_observe(h, time.perf_counter() - t0))


def loop(name, iterable):
    """Yields the items of ``iterable`` as the iterations (0-based) of the
    loop ``name``; records inside attach to the current iteration. The
    outermost loop shows a progress bar (tqdm) and, inside
    ``checkpointing``, checkpoints the registered objects at iteration ends
    (adaptively, always the last iteration)."""
    h = _recording_handle()
    outer = not _layers
    bname = name.encode("utf-8")
    if h is not None:
        st = lib.flor_loop_enter(h, bname, len(bname))
        if st:
            _status(st)
            h = _H
    src = iterable
    if outer:
        try:
            from tqdm import tqdm

            src = tqdm(iterable, file=sys.stderr)
        except ImportError:
            pass
    ckpt = outer and bool(_ckpt_objects)
    try:
        total = len(iterable) if ckpt else None
    except TypeError:
        total = None
    layer = [name, None]
    _layers.append(layer)
    try:
        pairs = _with_last(src) if ckpt and total is None else ((x, None) for x in src)
        for i, (item, is_last) in enumerate(pairs):
            text = _loop_text(item)
            layer[1] = str(i) if text is None else text
            if h is not None and _iterate(h, i, text):
                h = _H
            t0 = time.perf_counter()
            yield item
            if ckpt and h is not None:
                last = is_last if is_last is not None else (total is not None and i == total - 1)
                _end_outer_iteration(h, i, last, time.perf_counter() - t0)
    finally:
        _layers.pop()
        if h is not None and _H is not None:
            st = lib.flor_loop_exit(h, bname, len(bname))
            if st:
                _status(st)


@contextmanager
def iteration(name, idx, value=None):
    """One iteration of the loop ``name`` that is not a Python loop (a web
    request handling one document): records inside attach to it."""
    h = _recording_handle()
    bname = name.encode("utf-8")
    index = int(idx) if idx is not None else 0
    text = str(value) if value is not None else None
    if h is not None:
        st = lib.flor_loop_enter(h, bname, len(bname))
        if st:
            _status(st)
            h = _H
        elif _iterate(h, index, text):
            h = _H
    _layers.append([name, text if text is not None else str(index)])
    try:
        yield
    finally:
        _layers.pop()
        if h is not None and _H is not None:
            st = lib.flor_loop_exit(h, bname, len(bname))
            if st:
                _status(st)


@contextmanager
def checkpointing(**objects):
    """Registers ``objects`` to be checkpointed at the outermost loop's
    iteration ends (adaptively; ``FLOR_CKPT=every`` for all), together with
    the states of Python's ``random``, numpy's global generator and torch's
    (when imported). Objects with ``state_dict()``, numpy arrays and
    Generators, dicts, lists and picklable objects are supported; see
    :func:`flordb.checkpoints.restore`."""
    _ckpt_objects.update(objects)
    try:
        yield
    finally:
        for k in objects:
            _ckpt_objects.pop(k, None)


def commit():
    """Seals the current run (Parquet segments, code snapshot on the shadow
    branch ``flor.<branch>``); the next record starts a new run. Runs at
    exit and after each IPython cell automatically."""
    SESSION.commit()
