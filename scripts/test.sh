#!/usr/bin/env bash
# Runs every test: the C++ suite (ctest: gtest and the C++ example) and the Python suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
ctest --test-dir build/py --output-on-failure -j2
.venv/bin/python -m pytest -q python/tests "$@"
