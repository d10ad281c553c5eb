"""The handle keeps the context of its last ``dataframe`` call and reuses it
while nothing changed: the results must be the same as without the cache
after every kind of change (own unsealed records, own commit, another
process's seal)."""

import json

from conftest import run_script

SCRIPT = """
import json, os, subprocess, sys
import flordb as flor

def snap(tag):
    df = flor.dataframe("loss")
    print(tag, json.dumps([len(df), sorted(float(v) for v in df["loss"])]))

for s in flor.loop("step", range(3)):
    flor.log("loss", float(s))
flor.commit()
snap("A")  # builds and keeps the context
snap("B")  # the kept one
flor.log("loss", 10.0)
snap("C")  # an unsealed record: built anew, with it
flor.commit()
snap("D")  # a new manifest: built anew
writer = "import flordb as flor\\nflor.log('loss', 20.0)\\n"
subprocess.run([sys.executable, "-c", writer], check=True, env=dict(os.environ, FLOR_ECHO="0"))
snap("E")  # another process sealed a run
snap("F")
"""


def _snaps(stdout):
    out = {}
    for line in stdout.splitlines():
        tag, _, rest = line.partition(" ")
        if tag in "ABCDEF" and rest.startswith("["):
            out[tag] = json.loads(rest)
    return out


def test_dataframe_cache_follows_every_change(repo):
    cached = _snaps(run_script(repo, SCRIPT, env={"FLOR_ECHO": "0"}).stdout)
    assert cached == {
        "A": [3, [0.0, 1.0, 2.0]],
        "B": [3, [0.0, 1.0, 2.0]],
        "C": [4, [0.0, 1.0, 2.0, 10.0]],
        "D": [4, [0.0, 1.0, 2.0, 10.0]],
        "E": [5, [0.0, 1.0, 2.0, 10.0, 20.0]],
        "F": [5, [0.0, 1.0, 2.0, 10.0, 20.0]],
    }


def test_dataframe_without_cache_reads_the_same(repo):
    uncached = _snaps(run_script(repo, SCRIPT, env={"FLOR_ECHO": "0", "FLOR_QUERY_CACHE": "0"}).stdout)
    assert uncached["F"] == [5, [0.0, 1.0, 2.0, 10.0, 20.0]]
    assert uncached["C"] == [4, [0.0, 1.0, 2.0, 10.0]]
