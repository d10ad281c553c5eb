"""Helpers on dataframes (FlorDB's ``flor.utils``)."""


def latest(df):
    """The rows of ``df`` from the newest run of each script: the newest
    ``tstamp`` per ``filename`` (FlorDB 4.0.1 keeps the newest of the whole
    frame; with one script both agree)."""
    if df.empty or "tstamp" not in df.columns:
        return df
    if "filename" not in df.columns:
        return df[df["tstamp"] == df["tstamp"].max()]
    newest = df.groupby("filename", dropna=False)["tstamp"].transform("max")
    return df[df["tstamp"] == newest]


def is_jsonable(x):
    """Whether ``x`` serializes to JSON (FlorDB's helper)."""
    import json

    try:
        json.dumps(x)
        return True
    except (TypeError, OverflowError, ValueError):
        return False
