# Sourced by the scripts in this folder: idempotent environment setup.
ensure_venv() {
    # $1: the optional-dependency extra to install ("" for none).
    local extra="${1:-}" stamp=".venv/jtrix-${1:-base}.stamp" want
    want=$(sha256sum pyproject.toml | cut -d' ' -f1)
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv
    fi
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "setting up .venv (log: .venv/install.log) ..." >&2
        local target="."
        [ -n "$extra" ] && target=".[$extra]"
        if ! { .venv/bin/python -m pip install --upgrade pip && .venv/bin/python -m pip install -e "$target"; } \
                >.venv/install.log 2>&1; then
            tail -n 30 .venv/install.log >&2
            echo "installing jtrix into .venv failed (see .venv/install.log)" >&2
            return 1
        fi
        echo "$want" >"$stamp"
    fi
}

ensure_debian_package() {
    # $1: a command that must exist; $2: the Debian package providing it.
    # Best effort: without root or apt the dependent tests skip with a reason.
    command -v "$1" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" \
          || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2"; }; } >/dev/null 2>&1 || true
    fi
}
