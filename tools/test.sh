#!/usr/bin/env bash
# Installs everything the test suite needs (Python packages into .venv, Debian packages for the
# non-Python client tests) and runs the suite. This is the README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  if ! command -v go-sendxmpp >/dev/null 2>&1 || ! command -v xmppc >/dev/null 2>&1 \
    || ! command -v chromium >/dev/null 2>&1 || ! command -v faketime >/dev/null 2>&1 \
    || ! command -v cc >/dev/null 2>&1 || ! command -v prosody >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1 || true
    # As root with apt (CI), a failed install fails the run: the test must not be skipped there.
    # chromium: the status page test opens the page headless and takes its screenshot.
    # faketime: the fault campaign's clock_step preloads libfaketime into a node (tools/faults);
    # gcc builds the small shim that works around libfaketime's clock_nanosleep bug.
    # prosody + lua-unbound: the s2s interoperability test (test_s2s.py) federates with a real
    # Prosody, whose libunbound resolver the test points at its own DNS stub.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq go-sendxmpp xmppc chromium faketime gcc \
      prosody lua-unbound >/dev/null
  fi
fi
if ! command -v npm >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  fi
fi
# xmpp.js and StanzaJS: the independent JavaScript clients of the SASL2/FAST, WebSocket and
# BOSH tests.
(cd tests/js && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e '.[test]'
.venv/bin/ruff check src tests tools
exec .venv/bin/pytest -q "$@"
