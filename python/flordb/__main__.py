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


if __name__ == "__main__":
    sys.exit(main())
