#!/usr/bin/env bash
# Install what the tests need into .venv and run them all: unit, integration (PostgreSQL), e2e.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q -e '.[test]'

# The tests create a fresh database per test on the PostgreSQL at 127.0.0.1:5432
# (override with DEALREG_TEST_POSTGRES). Start the local cluster if it is installed but down.
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && command -v pg_ctlcluster >/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi

# The browser tests drive Debian's Chromium (never a downloaded browser): install it if missing.
if ! command -v chromium >/dev/null; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q chromium
fi

# Static checks first: they take seconds and name the line.
.venv/bin/ruff check .
.venv/bin/mypy

# Two workers (pytest-xdist): every test makes its own database, topic, ports and data
# directory, so they run side by side; DEALREG_TEST_WORKERS=0 runs them in this process.
exec .venv/bin/python -m pytest -q -n "${DEALREG_TEST_WORKERS:-2}" "$@"
