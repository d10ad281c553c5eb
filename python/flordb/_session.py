"""The process's flordb session: the native handle (opened lazily), the
script's ``filename``, the ``--kwargs`` taken off ``sys.argv``, and the
commit at exit / after each IPython cell."""

import atexit
import os
import sys

from . import _native_api as native
from ._native_api import ffi, lib

# The command line as given, before ``--kwargs`` was taken out of sys.argv:
# the native side parses and casts the ``--kwargs`` from it.
ORIGINAL_ARGV = list(sys.argv)


def strip_kwargs(argv):
    """``argv`` without ``--kwargs`` and its ``k=v`` items (every token after
    ``--kwargs`` up to the next one starting with ``--``), as the script
    should see it."""
    out, in_kwargs = [], False
    for tok in argv:
        if tok == "--kwargs":
            in_kwargs = True
            continue
        if in_kwargs and not tok.startswith("--"):
            continue
        in_kwargs = False
        out.append(tok)
    return out


def parse_kwargs(argv):
    """``{key: raw text}`` of the ``--kwargs`` items in ``argv`` (later wins)."""
    values, in_kwargs = {}, False
    for tok in argv:
        if tok == "--kwargs":
            in_kwargs = True
            continue
        if in_kwargs and not tok.startswith("--"):
            key, sep, value = tok.partition("=")
            if sep and key:
                values[key] = value
            continue
        in_kwargs = False
    return values


def repo_root(start):
    """The work tree root of the git repository containing ``start``, or None."""
    d = os.path.abspath(start)
    while True:
        if os.path.exists(os.path.join(d, ".git")):
            return d
        parent = os.path.dirname(d)
        if parent == d:
            return None
        d = parent


def script_filename(argv0, cwd):
    """The ``filename`` recorded for the running script: its path relative
    to the repository root (``/``-separated), the bare name for a script at
    the root or outside the repository, ``interactive`` for a REPL,
    notebook or ``python -c``."""
    if not argv0 or argv0 in ("-c", "-"):
        return "interactive"
    path = os.path.abspath(os.path.join(cwd, argv0))
    root = repo_root(cwd)
    if root is not None:
        real_root, real_path = os.path.realpath(root), os.path.realpath(path)
        if os.path.commonpath([real_root, real_path]) == real_root:
            return os.path.relpath(real_path, real_root).replace(os.sep, "/")
    return os.path.basename(path)


class Session:
    """The one native handle of this process, opened at first use."""

    def __init__(self):
        self.ptr = None
        self.recording = True  # False once recording was refused (outside git)
        self.refusal = None

    def handle(self):
        """The native handle (opening it on first use)."""
        if self.ptr is None:
            cwd = os.getcwd()
            argv0 = ORIGINAL_ARGV[0] if ORIGINAL_ARGV else ""
            if argv0 == "-m" or (argv0.endswith("__main__.py") and "flordb" in argv0):
                argv0 = ""
            filename = script_filename(argv0, cwd)
            keep = [ffi.new("char[]", a.encode("utf-8", "surrogateescape")) for a in ORIGINAL_ARGV]
            argv = ffi.new("char *[]", keep) if keep else ffi.NULL
            out = ffi.new("FlorHandle **")
            native.check(lib.flor_open(cwd.encode(), filename.encode(), argv, len(keep), out))
            self.ptr = out[0]
        return self.ptr

    def refuse(self, status):
        """Stops recording after ``status`` NOT_A_REPOSITORY, saying so once."""
        self.recording = False
        self.refusal = native.last_error()
        sys.stderr.write(f"flordb: not recording: {self.refusal}\n")
        sys.stderr.flush()

    def commit(self):
        """Seals the current run; True when there was one."""
        if self.ptr is None:
            return False
        done = ffi.new("bool *")
        native.check(lib.flor_commit(self.ptr, done))
        return bool(done[0])

    def close(self):
        """Commits and releases the handle (at exit)."""
        if self.ptr is not None:
            try:
                self.commit()
            except Exception as e:  # report, never raise at exit
                sys.stderr.write(f"flordb: commit at exit failed: {e}\n")
            ptr, self.ptr = self.ptr, None
            lib.flor_free(ptr)


SESSION = Session()

# The script sees its arguments without --kwargs (FlorDB does the same).
sys.argv[:] = strip_kwargs(sys.argv)


@atexit.register
def _at_exit():
    SESSION.close()


def _install_ipython_hook():
    """After each IPython cell, commit what it logged (a no-op otherwise)."""
    ip = None
    if "IPython" in sys.modules:
        try:
            from IPython import get_ipython

            ip = get_ipython()
        except Exception:
            ip = None
    if ip is None:
        return

    def _post_run_cell(*_args):
        try:
            SESSION.commit()
        except Exception as e:
            sys.stderr.write(f"flordb: commit after cell failed: {e}\n")

    ip.events.register("post_run_cell", _post_run_cell)


_install_ipython_hook()
