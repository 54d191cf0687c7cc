#!/usr/bin/env bash
# Runs a benchmark in its own environment (.bench-venv: jtrix + the rivals it is
# compared with: supervisor, pysyncobj). Each script prints a table and writes
# JSON under bench/results/ (not committed).
# Usage: bench/run.sh NAME [ARGS...]   runs bench/NAME.py ARGS  (e.g. restart_latency --trials 50)
#        bench/run.sh restart [TRIALS]   (bench/restart_latency.py --trials TRIALS)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .bench-venv/bin/python ]; then
    python3 -m venv .bench-venv
fi
stamp=".bench-venv/.installed-$(cat pyproject.toml bench/run.sh | sha256sum | cut -c1-16)"
if [ ! -e "$stamp" ]; then
    .bench-venv/bin/python -m pip install -q -e ".[test]" "supervisor>=4.2" "pysyncobj>=0.3.12" \
        "pyinstrument>=4.6" >/dev/null
    touch "$stamp"
fi
mkdir -p bench/results
name="${1:-restart}"; shift || true
case "$name" in
    restart) exec .bench-venv/bin/python bench/restart_latency.py --trials "${1:-50}" ;;
esac
script="bench/${name%.py}.py"
[ -f "$script" ] || { echo "unknown benchmark: $name (no $script)" >&2; exit 2; }
exec .bench-venv/bin/python "$script" "$@"
