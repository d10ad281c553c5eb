"""``python -m flordb …``: the ``flor`` command, run in-process by the same
Rust engine (``flor_cli_main``): ``dataframe``, ``sql``, ``runs``,
``versions``, ``replay``, ``propagate``, ``plot``; ``--help`` on each.
``query`` is accepted for ``sql`` (FlorDB's name).

Exit codes: 0 success, 1 failure (one line on stderr), 2 usage error.
Replay workers run with this interpreter (``FLOR_PYTHON``).
"""

import os
import sys


def main(argv=None):
    from ._native import ffi, lib

    rest = list(sys.argv[1:] if argv is None else argv)
    if rest[:1] == ["query"]:  # FlorDB's name for `flor sql`
        rest[0] = "sql"
    args = ["flor", *rest]
    os.environ.setdefault("FLOR_PYTHON", sys.executable)
    sys.stdout.flush()
    keep = [ffi.new("char[]", a.encode("utf-8", "surrogateescape")) for a in args]
    return int(lib.flor_cli_main(ffi.new("char *[]", keep), len(keep)))


def _exit(code):
    """Ends the process with `code`. The engine has closed what it opened
    and flushed its output, so the interpreter's teardown (finalizing every
    module and object, 10-20 ms) is skipped with ``os._exit``, but only when
    this file is the program (``python -m flordb``, not run by runpy from
    another program) and no exit handler is registered (a recording
    session's, a coverage tool's, the host's): otherwise ``sys.exit``."""
    import atexit

    ours = os.path.abspath(sys.argv[0] if sys.argv else "") == os.path.abspath(__file__)
    if not ours or getattr(atexit, "_ncallbacks", lambda: 1)() or "flordb._session" in sys.modules:
        sys.exit(code)
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    _exit(main())
