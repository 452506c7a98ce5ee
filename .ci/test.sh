#!/usr/bin/env bash
# Every test: unit, integration, fault and end-to-end (real Redis, real uvicorn, real Chromium).
# The README's second command; .ci/run calls it. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup.sh test
exec .venv/bin/python -m pytest "$@"
