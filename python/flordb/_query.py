"""Reading: ``dataframe`` and ``query`` as pandas DataFrames, built by
pyarrow from the Arrow C stream the native side hands out."""

import json

from . import _native_api as native
from ._native_api import lib
from ._session import SESSION

_VALUE_TYPE = b"flor.value_type"


def to_pandas(table):
    """A pandas DataFrame of an Arrow table with flordb's dtypes: integers
    as nullable ``Int64``, floats ``float64``, bools nullable ``boolean``,
    text as pyarrow-backed ``string`` (no Python objects per row), JSON
    columns (lists/dicts) parsed into Python objects, ``tstamp`` as
    ``datetime64`` (UTC)."""
    import pandas as pd
    import pyarrow as pa

    string = pd.StringDtype("pyarrow")
    mapping = {
        pa.int64(): pd.Int64Dtype(),
        pa.bool_(): pd.BooleanDtype(),
        pa.string(): string,
        pa.large_string(): string,
    }
    if hasattr(pa, "string_view"):
        mapping[pa.string_view()] = string
    json_cols = [f.name for f in table.schema if (f.metadata or {}).get(_VALUE_TYPE) == b"json"]
    # One block per column: no consolidation copy (a cold call over 10^6
    # rows converts in ~11 ms instead of 18-53 ms; BENCHMARKS.md).
    df = table.to_pandas(types_mapper=mapping.get, split_blocks=True)
    for name in json_cols:
        col = table.column(name).to_pylist()
        df[name] = pd.Series([json.loads(v) if v is not None else None for v in col], dtype=object, index=df.index)
    return df


def dataframe_table(*names, latest=False):
    """``dataframe`` as a ``pyarrow.Table`` (no pandas conversion)."""
    h = SESSION.handle()
    ptrs, lens, _keep = native.str_array([str(n) for n in names])
    return native.stream_to_table(lambda out: lib.flor_query_dataframe(h, ptrs, lens, len(names), latest, out))


def dataframe(*names, latest=False):
    """The pivoted view (FlorDB's ``flor.dataframe``): with names, one row
    per run and loop position, columns ``projid, tstamp, filename, source``,
    one column per loop level (0-based; ``<loop>_value`` when the iterated
    value differs from the index), then the names in the order asked.
    Without names, one row per run with every run-level name. ``latest``
    keeps the newest run of each script."""
    return to_pandas(dataframe_table(*names, latest=latest))


def query_table(sql):
    """``query`` as a ``pyarrow.Table``."""
    h = SESSION.handle()
    b = sql.encode("utf-8")
    return native.stream_to_table(lambda out: lib.flor_query_sql(h, b, len(b), out))


def query(sql):
    """Runs read-only SQL over the tables ``logs``, ``loops``, ``runs`` and
    ``versions``; the result as a pandas DataFrame."""
    return to_pandas(query_table(sql))
