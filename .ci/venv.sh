#!/usr/bin/env bash
# usage: venv.sh PYTHON DIR SPEC [ENV=VALUE...]
# Creates (or reuses) a venv at DIR with PYTHON and installs SPEC into it,
# rebuilding evpy from this checkout every time.
set -euo pipefail
py=$1 dir=$2 spec=$3
shift 3
if [ ! -x "$dir/bin/python" ]; then
    "$py" -m venv "$dir"
    "$dir/bin/python" -m pip install -q --upgrade pip setuptools wheel
fi
# Build without isolation (setuptools is in the venv) so the build flags in
# the environment reach setup.py; --force-reinstall rebuilds the extension.
# pip builds in ./build, where setuptools would take an extension built
# with other flags (ASan, EVPY_FAULTS) as up to date: start clean.
rm -rf build
env "$@" "$dir/bin/python" -m pip install -q --no-build-isolation \
    --force-reinstall --no-deps .
"$dir/bin/python" -m pip install -q "$spec"
