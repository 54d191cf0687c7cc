#!/usr/bin/env bash
# The project's test command: sets up .venv (when missing or when pyproject.toml
# changed), installs jtrix with its test extras, makes sure xmlsec1 is there for
# the XML-DSig interop test and etcd for the cluster tests (each test session starts
# its own private etcd on free ports), and runs pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
ensure_venv test
ensure_debian_package xmlsec1 xmlsec1
ensure_debian_package etcd etcd-server
exec .venv/bin/python -m pytest "$@"
