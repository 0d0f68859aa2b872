#!/usr/bin/env bash
# Sets up a fresh machine for millstream: system packages (GoogleTest, ccache), a virtual
# environment in .venv with pinned dependencies, and the package built and installed there.
# Safe to run again: the C++ build in build/py is incremental.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
dpkg -s libgtest-dev >/dev/null 2>&1 || need_apt+=(libgtest-dev)
command -v ccache >/dev/null 2>&1 || need_apt+=(ccache)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  fi
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
# Build the engine (C++ tests and the C++ example included) and install the package.
.venv/bin/pip install -q --disable-pip-version-check --no-build-isolation --no-deps \
  -Ccmake.define.MILLSTREAM_BUILD_TESTS=ON -Ccmake.define.MILLSTREAM_BUILD_EXAMPLES=ON .
