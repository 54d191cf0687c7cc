#!/usr/bin/env bash
# Runs the benchmarks in their own environment (.bench-venv: jtrix + supervisor).
# Usage: bench/run.sh restart [TRIALS] | bench/run.sh kvstore [TRIALS]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .bench-venv/bin/python ]; then
    python3 -m venv .bench-venv
fi
.bench-venv/bin/python -m pip install -q -e ".[test]" "supervisor>=4.2" >/dev/null
case "${1:-restart}" in
    restart) exec .bench-venv/bin/python bench/restart_latency.py --trials "${2:-50}" ;;
    kvstore) exec .bench-venv/bin/python bench/kvstore_bench.py --trials "${2:-20}" ;;
    *) echo "unknown benchmark: $1" >&2; exit 2 ;;
esac
