#!/usr/bin/env bash
# Install Deal Registry into .venv and start it in embedded mode (SQLite under ./data, no broker).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q -e .
exec .venv/bin/dealreg up --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}" --data-dir "${DATA_DIR:-./data}"
