#!/usr/bin/env bash
# The Quick start's main job: set up, start a local hosting node, launch the
# replicated kvstore example, write and read through its access point, SIGKILL
# the master, show the failover and the data intact, then clean up.
# Uses a fresh JTRIX_HOME (a temporary directory) unless JTRIX_HOME is set.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
ensure_venv ""
export PATH="$PWD/.venv/bin:$PATH"
export JTRIX_HOME="${JTRIX_HOME:-$(mktemp -d -t jtrix-demo.XXXXXX)}"
py() { .venv/bin/python -c "$@"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
cleanup() { jtrix terminate kvstore >/dev/null 2>&1 || true; jtrix host stop >/dev/null 2>&1 || true; }
trap cleanup EXIT

step "start the local hosting node (home: $JTRIX_HOME)"
jtrix host start

step "launch examples/kvstore: 3 replicas, one elected master"
jtrix-launch examples/kvstore/bootstrap.xml

step "write and read through the access point"
jtrix call kvstore put greeting hello
jtrix call kvstore append greeting ", world"
jtrix call kvstore put answer forty-two
echo "get_latest greeting -> $(jtrix call kvstore get_latest greeting)"

status_field() { jtrix status kvstore --json | py "import json,sys; a=json.load(sys.stdin)['apps'][0]; $1"; }
wait_until() {  # $1: a python condition on the app status `a`; $2: deadline in seconds
    local deadline=$((SECONDS + $2))
    until [ "$(status_field "print(bool($1))")" = True ]; do
        [ $SECONDS -lt $deadline ] || { echo "timed out waiting for: $1" >&2; exit 1; }
    done
}
master=$(status_field "print(a['master'])")
epoch=$(status_field "print(a['epoch'])")
pid=$(status_field "print(next(n['pid'] for n in a['netlets'] if n['slot']==a['master']))")
step "SIGKILL the master: $master (pid $pid, epoch $epoch)"
jtrix kill "kvstore/$master" --signal KILL
wait_until "a['master'] is not None and a['epoch'] > $epoch" 30
jtrix events kvstore --json | py "
import json, sys
events = [json.loads(line) for line in sys.stdin if line.strip()]
died = next(e for e in events if e['kind'] == 'netlet.exited' and e['slot'] == '$master')
won = next(e for e in events if e['kind'] == 'control.granted' and e['detail']['epoch'] > $epoch)
print(f\"new master: {won['slot']} at epoch {won['detail']['epoch']}, granted \"
      f\"{(won['time'] - died['time']) * 1000:.0f} ms after the node saw {died['slot']} die (node events)\")"

step "the data survived the failover"
echo "get_latest greeting -> $(jtrix call kvstore get_latest greeting)"
echo "get answer (any replica) -> $(jtrix call kvstore get answer)"
echo "keys -> $(jtrix call kvstore keys)"

step "jtrix status"
wait_until "all(n['state']=='running' and n['role'] in ('master','backup') for n in a['netlets'])" 30
jtrix status kvstore

step "what happened (jtrix events)"
jtrix events kvstore | tail -n 12

step "terminate the app (returns when every process is gone)"
jtrix terminate kvstore
jtrix host stop
trap - EXIT
