#!/usr/bin/env bash
# Installs xes into .venv and starts it on its embedded default: one node, domain "localhost",
# data in ./xes-data (created, with a self-signed certificate), c2s on 127.0.0.1:5222 (STARTTLS)
# and 127.0.0.1:5223 (direct TLS), HTTP on 127.0.0.1:5280 and HTTPS on 127.0.0.1:5281
# (WebSocket, BOSH, host-meta, /metrics). Pass "--config FILE" to use your own configuration.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e .
exec .venv/bin/xes serve "$@"
