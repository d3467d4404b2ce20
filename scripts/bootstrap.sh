#!/usr/bin/env bash
# Sets up a fresh machine for CoolPilot: a virtual environment in .venv with the CPU
# build of PyTorch first (a bare `pip install torch` would pull a multi-GB CUDA build),
# the package with its dev and postgres extras, and the local services the tests use
# (PostgreSQL, Mosquitto, Debian's prometheus/promtool) when they are missing or down.
# Safe to run again: every step is idempotent, and a re-run with nothing to do is silent
# (each long step says what it does first; the install is skipped while pyproject.toml is
# unchanged, see .venv/.coolpilot-installed).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
say() { echo "bootstrap: $*" >&2; }
if [ ! -x .venv/bin/python ]; then
    say "creating the virtual environment in .venv and updating pip ..."
    "$PY" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
fi
. .venv/bin/activate
if ! python -c "import torch" 2>/dev/null; then
    say "installing the CPU build of PyTorch (about a minute) ..."
    python -m pip install -q "torch==2.13.0" \
        || python -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
fi
STAMP=.venv/.coolpilot-installed
WANT="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ] || ! python -c "import coolpilot" 2>/dev/null; then
    say "installing CoolPilot with its dev, postgres, energyplus, bacnet and ray extras (first run: a few minutes) ..."
    python -m pip install -q -e ".[dev,postgres,energyplus,bacnet,ray]"
    echo "$WANT" > "$STAMP"
fi

# Local services for the test suite (skipped quietly where we are not root).
if [ "$(id -u)" = "0" ]; then
    if command -v pg_ctlcluster >/dev/null && ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
        say "starting PostgreSQL ..."
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start || true
    fi
    if command -v mosquitto >/dev/null && ! (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; then
        say "starting Mosquitto ..."
        mosquitto -d -c /etc/mosquitto/mosquitto.conf || true
    fi
    if ! command -v promtool >/dev/null; then
        say "installing prometheus (promtool) from the distribution ..."
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null; } \
            || echo "bootstrap: could not install prometheus; its tests will be skipped" >&2
    fi
fi
say "ready (.venv, $(python -c 'import torch; print("torch", torch.__version__)'))"
