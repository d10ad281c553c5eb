"""Serializing checkpointed objects to bytes and restoring them in place.

Each object is stored as one checkpoint: a one-byte kind tag followed by
its payload. Restoring writes into the live object (so references the
script holds see the restored state):

- objects with ``state_dict()``: ``load_state_dict`` (torch.save when the
  object is a torch module/optimizer and torch is imported, else pickle);
- numpy arrays: ``.npy`` bytes, restored by slice assignment ``a[...] = b``;
- numpy Generators: ``bit_generator.state``;
- dicts: ``clear()`` + ``update()``; lists: ``clear()`` + ``extend()``;
- anything else: pickle; objects with a ``__dict__`` get it replaced.

The RNG states of Python's ``random``, numpy's global generator and
torch's (when those modules are imported) are saved beside the objects
under ``flor.rng.random``, ``flor.rng.numpy`` and ``flor.rng.torch``.
"""

import io
import pickle
import random
import sys

STATE_DICT, NUMPY, GENERATOR, DICT, LIST, PICKLE, TORCH = b"S", b"N", b"G", b"D", b"L", b"P", b"T"

RNG_RANDOM, RNG_NUMPY, RNG_TORCH = "flor.rng.random", "flor.rng.numpy", "flor.rng.torch"
RNG_NAMES = frozenset((RNG_RANDOM, RNG_NUMPY, RNG_TORCH))


def _torch():
    return sys.modules.get("torch")


def dumps(obj):
    """The checkpoint bytes of ``obj``."""
    np = sys.modules.get("numpy")
    if hasattr(obj, "state_dict") and callable(obj.state_dict) and hasattr(obj, "load_state_dict"):
        torch = _torch()
        if torch is not None:
            buf = io.BytesIO()
            torch.save(obj.state_dict(), buf)
            return TORCH + buf.getvalue()
        return STATE_DICT + pickle.dumps(obj.state_dict(), protocol=pickle.HIGHEST_PROTOCOL)
    if np is not None:
        if isinstance(obj, np.ndarray):
            buf = io.BytesIO()
            np.save(buf, obj, allow_pickle=False)
            return NUMPY + buf.getvalue()
        if isinstance(obj, np.random.Generator):
            return GENERATOR + pickle.dumps(obj.bit_generator.state, protocol=pickle.HIGHEST_PROTOCOL)
    if isinstance(obj, dict):
        return DICT + pickle.dumps(dict(obj), protocol=pickle.HIGHEST_PROTOCOL)
    if isinstance(obj, list):
        return LIST + pickle.dumps(list(obj), protocol=pickle.HIGHEST_PROTOCOL)
    return PICKLE + pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _npy_view(np, payload):
    """The array in ``.npy`` bytes ``payload`` (any buffer) without copying
    its data, or None when its header is not a plain version 1/2 header."""
    from numpy.lib import format as npy

    try:
        head = io.BytesIO(bytes(payload[: 1 << 16]))
        version = npy.read_magic(head)
        if version == (1, 0):
            shape, fortran, dtype = npy.read_array_header_1_0(head)
        elif version == (2, 0):
            shape, fortran, dtype = npy.read_array_header_2_0(head)
        else:
            return None
    except ValueError:
        return None
    if dtype.hasobject:
        return None
    count = 1
    for n in shape:
        count *= n
    flat = np.frombuffer(payload, dtype=dtype, count=count, offset=head.tell())
    return flat.reshape(shape, order="F" if fortran else "C")


def npy_prefix(obj):
    """The bytes :func:`dumps` writes before the data of ``obj`` (the kind
    byte and the ``.npy`` header) when ``obj`` is a plain numpy array whose
    memory can take a checkpoint's data as it is (C-contiguous, writable,
    no Python objects); None otherwise. Replay restores such an array
    straight into its memory (``flor_checkpoint_load_recipe_to``): a
    checkpoint saved from an array of another shape or dtype has another
    header, and is then restored through a buffer."""
    np = sys.modules.get("numpy")
    if np is None or type(obj) is not np.ndarray:
        return None
    if not (obj.flags.c_contiguous and obj.flags.writeable) or obj.dtype.hasobject:
        return None
    from numpy.lib import format as npy

    buf = io.BytesIO()
    try:
        npy.write_array_header_1_0(buf, npy.header_data_from_array_1_0(obj))
    except ValueError:
        return None  # a header too large for version 1.0
    return NUMPY + buf.getvalue()


def restore(obj, data):
    """Restores ``data`` (from :func:`dumps`; bytes or any buffer, which is
    not referenced after the call) into ``obj`` in place and returns ``obj``
    (or the unpickled value when ``obj`` cannot be updated in place)."""
    kind, payload = bytes(data[:1]), memoryview(data)[1:]
    if kind == TORCH:
        torch = _torch()
        if torch is None:
            import torch  # noqa: F811 - the checkpoint needs it
        obj.load_state_dict(torch.load(io.BytesIO(payload), weights_only=False))
        return obj
    if kind == STATE_DICT:
        obj.load_state_dict(pickle.loads(payload))
        return obj
    if kind == NUMPY:
        import numpy as np

        value = _npy_view(np, payload)
        if value is None:
            value = np.load(io.BytesIO(payload), allow_pickle=False)
        if obj is None:
            return value.copy()
        obj[...] = value
        return obj
    if kind == GENERATOR:
        state = pickle.loads(payload)
        if obj is None:
            import numpy as np

            g = np.random.default_rng()
            g.bit_generator.state = state
            return g
        obj.bit_generator.state = state
        return obj
    if kind == DICT:
        value = pickle.loads(payload)
        if obj is None:
            return value
        obj.clear()
        obj.update(value)
        return obj
    if kind == LIST:
        value = pickle.loads(payload)
        if obj is None:
            return value
        obj.clear()
        obj.extend(value)
        return obj
    if kind == PICKLE:
        value = pickle.loads(payload)
        if obj is not None and hasattr(obj, "__dict__") and type(obj) is type(value):
            obj.__dict__.clear()
            obj.__dict__.update(value.__dict__)
            return obj
        return value
    raise ValueError(f"unknown checkpoint kind {kind!r}")


def rng_states():
    """(name, bytes) of the RNG states of the imported generators."""
    out = [(RNG_RANDOM, pickle.dumps(random.getstate(), protocol=pickle.HIGHEST_PROTOCOL))]
    np = sys.modules.get("numpy")
    if np is not None:
        out.append((RNG_NUMPY, pickle.dumps(np.random.get_state(), protocol=pickle.HIGHEST_PROTOCOL)))
    torch = _torch()
    if torch is not None and hasattr(torch, "get_rng_state"):
        buf = io.BytesIO()
        state = {"cpu": torch.get_rng_state()}
        try:
            if torch.cuda.is_available():
                state["cuda"] = torch.cuda.get_rng_state_all()
        except Exception:
            pass
        torch.save(state, buf)
        out.append((RNG_TORCH, buf.getvalue()))
    return out


def restore_rng(name, data):
    """Sets the generator ``name`` (one of ``rng_states``'s) to ``data``."""
    if name == RNG_RANDOM:
        random.setstate(pickle.loads(data))
    elif name == RNG_NUMPY:
        import numpy as np

        np.random.set_state(pickle.loads(data))
    elif name == RNG_TORCH:
        import torch

        state = torch.load(io.BytesIO(data), weights_only=False)
        torch.set_rng_state(state["cpu"])
        if "cuda" in state:
            torch.cuda.set_rng_state_all(state["cuda"])
    else:
        raise ValueError(f"unknown generator {name!r}")


def snapshot(objects):
    """(name, bytes) for every registered object, then the RNG states."""
    for name, obj in objects.items():
        yield name, dumps(obj)
    yield from rng_states()
