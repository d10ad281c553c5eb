"""``python -m flordb``: the ``flor`` command's read side from Python.

    python -m flordb dataframe [NAME ...] [--latest] [--format table|csv|json]
    python -m flordb sql QUERY          (alias: query)
    python -m flordb runs | versions
    python -m flordb replay ...         (the `flor replay` command)

Exit codes: 0 success, 1 failure (one line on stderr), 2 usage error.
"""

import argparse
import sys


def _print(df, fmt):
    if fmt == "csv":
        df.to_csv(sys.stdout, index=False)
    elif fmt == "json":
        sys.stdout.write(df.to_json(orient="records", date_format="iso") + "\n")
    else:
        import pandas as pd

        with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 200):
            print(df.to_string(index=False) if len(df) else "(no rows)")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m flordb", description="Query ML metadata recorded with flordb")
    parser.add_argument("--format", choices=["table", "csv", "json"], default="table")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("dataframe", help="pivot logged values into one table (one column per name)")
    p.add_argument("names", nargs="*")
    p.add_argument("--latest", action="store_true", help="only the newest run of each script")
    for name in ("sql", "query"):
        p = sub.add_parser(name, help="run SQL over the tables logs, loops, runs, versions")
        p.add_argument("query")
    sub.add_parser("runs", help="list runs")
    sub.add_parser("versions", help="list code versions (git snapshots) of runs")
    p = sub.add_parser("replay", help="hindsight logging: use the `flor replay` command")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)

    import flordb

    try:
        if args.command == "dataframe":
            _print(flordb.dataframe(*args.names, latest=args.latest), args.format)
        elif args.command in ("sql", "query"):
            _print(flordb.query(args.query), args.format)
        elif args.command == "runs":
            _print(flordb.query("SELECT * FROM runs ORDER BY tstamp, run_id"), args.format)
        elif args.command == "versions":
            _print(flordb.query("SELECT * FROM versions ORDER BY tstamp, run_id"), args.format)
        elif args.command == "replay":
            sys.stderr.write("flordb: replay runs from the `flor` command: flor replay NAME ... (see `flor replay --help`)\n")
            return 2
    except flordb.FlorError as e:
        sys.stderr.write(f"flordb: {e}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
