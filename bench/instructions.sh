#!/bin/bash
# Instructions per call of the SIP message layer (bench/sip_messages.py), counted by valgrind's
# callgrind: deterministic, where CPU time on a shared VM moves by 10-60 % from run to run.
# The interpreter's start is taken out by counting a run of 0 calls too.
#
#   bench/instructions.sh [CALLS]                                # this tree
#   PYTHONPATH=/path/to/old/firmware bench/instructions.sh       # another tree, to compare
set -euo pipefail
calls=${1:-200}
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-$here/../.venv/bin/python}
command -v valgrind >/dev/null || { echo "valgrind is missing (Debian package valgrind)" >&2; exit 1; }
count() {
    local log
    log=$(mktemp)
    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        "$python" "$here/sip_messages.py" --repeat 1 --calls "$1" >/dev/null 2>"$log"
    grep -o "Collected : [0-9]*" "$log" | awk '{print $3}'
    rm -f "$log"
}
start=$(count 0)
total=$(count "$calls")
echo "sip message layer: $(( (total - start) / calls )) instructions per call (callgrind, $calls calls)"
