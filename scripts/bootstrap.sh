#!/usr/bin/env bash
# Sets up a fresh machine for CoolPilot: a virtual environment in .venv with the CPU
# build of PyTorch first (a bare `pip install torch` would pull a multi-GB CUDA build),
# the package with its dev and postgres extras, and the local services the tests use
# (PostgreSQL, Mosquitto, Debian's prometheus/promtool) when they are missing or down.
# Safe to run again: every step is idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
echo "bootstrap: virtual environment in .venv; CPU build of PyTorch (first run: about a minute) ..." >&2
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0" \
    || python -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
echo "bootstrap: installing CoolPilot with its dev, postgres, energyplus, bacnet and ray extras (first run: a few minutes) ..." >&2
python -m pip install -q -e ".[dev,postgres,energyplus,bacnet,ray]"

# Local services for the test suite (skipped quietly where we are not root).
if [ "$(id -u)" = "0" ]; then
    if command -v pg_ctlcluster >/dev/null && ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start || true
    fi
    if command -v mosquitto >/dev/null && ! (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; then
        mosquitto -d -c /etc/mosquitto/mosquitto.conf || true
    fi
    if ! command -v promtool >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null; } \
            || echo "bootstrap: could not install prometheus; its tests will be skipped" >&2
    fi
fi
echo "bootstrap: ready (.venv, $(python -c 'import torch; print("torch", torch.__version__)'))" >&2
