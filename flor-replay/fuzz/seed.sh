#!/usr/bin/env bash
# Writes a seed corpus for the `propagate` fuzz target from the propagation
# corpus (tests/corpus): each case as NEW \0 OLD \0 TARGETS, and once more
# without targets (every line of NEW tried).
#   ./seed.sh corpus/propagate && RUSTC_BOOTSTRAP=1 cargo fuzz run propagate
set -euo pipefail
out=${1:-corpus/propagate}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
for case in "$here"/../tests/corpus/*/; do
    name=$(basename "$case")
    { cat "$case/new.py"; printf '\0'; cat "$case/old.py"; printf '\0'; cat "$case/targets"; } > "$out/$name"
    { cat "$case/new.py"; printf '\0'; cat "$case/old.py"; } > "$out/${name}_lines"
done
echo "$(ls "$out" | wc -l) seeds in $out"
