#!/bin/sh
# CI: build the iCEBreaker (tiny) and ULX3S 85F (default) bitstreams; exit 1 if either does not
# fit its device or misses its board clock (12 MHz / 100 MHz). Both builds run at once (2 cores).
#
# Cache between CI runs, both keyed on the lock of pyproject.toml:
#   ~/.cache/YoWASP   the YoWASP tools' one-time compilation (~2 min per tool when cold)
#   build/board       each board's plan hash, report and bitstream: an unchanged design is not
#                     rebuilt (tilemesh build compares the hash of its inputs and tool versions)
# Usage: boards/ci_bitstreams.sh [--force]    (from anywhere; BIN overrides .venv/bin)
set -u
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
start=$(date +%s)
"$BIN/python" -m tilemesh.toolchain          # warm the YoWASP tools once, before both builds
mkdir -p build/board
pids=""
for board in icebreaker ulx3s-85f; do
    "$BIN/tilemesh" build --board "$board" "$@" > "build/board/$board.ci.log" 2>&1 &
    pids="$pids $!"
done
status=0
for pid in $pids; do
    wait "$pid" || status=1
done
for board in icebreaker ulx3s-85f; do
    echo "=== $board"
    cat "build/board/$board.ci.log"
done
echo "bitstreams: $(( $(date +%s) - start )) s, $( [ $status = 0 ] && echo ok || echo FAIL)"
exit $status
