#!/usr/bin/env bash
# The whole test run (what `make test` and CI run). Fails on any failure,
# on a warning in the C build, and on pytest collecting no test.
set -uo pipefail
cd "$(dirname "$0")/.."
VENVS=${VENVS:-.venv}
logdir=${LOGDIR:-$VENVS/logs}
mkdir -p "$logdir"
export EVPY_WERROR=1
failed=()

pytest_run() {
    # usage: pytest_run NAME VENV [ENV=VALUE...]
    local name=$1 venv=$2
    shift 2
    echo "== $name"
    # Run from tests/ so `import evpy` finds the installed package, not
    # the source tree.
    if (cd tests && env "$@" "../$venv/bin/python" -m pytest -q -p no:cacheprovider \
            --rootdir=.. -c ../pyproject.toml . ) >"$logdir/$name.log" 2>&1; then
        tail -n 1 "$logdir/$name.log"
    else
        cat "$logdir/$name.log" | tail -n 60
        failed+=("$name")
    fi
}

conformance_run() {
    # usage: conformance_run NAME VENV [RUNNER-OPTION...]: CPython's asyncio
    # suite against the installed evpy, gated by the expected-failures list.
    local name=$1 venv=$2
    shift 2
    echo "== $name"
    if "$venv/bin/python" conformance/runner.py -j2 --check "$@" \
            --json "$logdir/$name.json" >"$logdir/$name.log" 2>&1; then
        grep -E '^TOTAL' "$logdir/$name.log"
    else
        tail -n 40 "$logdir/$name.log"
        failed+=("$name")
    fi
}

echo "== kqueue backend compile check (stub <sys/event.h>)"
if ! gcc -std=c11 -Wall -Wextra -Wshadow -Werror -fsyntax-only -D_GNU_SOURCE \
        -I.ci/kqueue-stub -DEVPY_HAVE_KQUEUE=1 \
        csrc/core/poller_kqueue.c csrc/core/poller.c; then
    failed+=("kqueue-compile")
fi

for v in 311 312 313; do
    pyvar=PY$v
    py=${!pyvar}
    echo "== build py$v"
    if ! bash .ci/venv.sh "$py" "$VENVS/py$v" '.[test]' >"$logdir/build-py$v.log" 2>&1; then
        cat "$logdir/build-py$v.log"
        failed+=("build-py$v")
        continue
    fi
    pytest_run "py$v" "$VENVS/py$v"
    conformance_run "conformance-py$v" "$VENVS/py$v"
done

pytest_run "py312-poll" "$VENVS/py312" EVPY_POLLER=poll
pytest_run "py312-debug" "$VENVS/py312" PYTHONASYNCIODEBUG=1
conformance_run "conformance-py312-debug" "$VENVS/py312" --debug

echo "== build py312-asan"
if bash .ci/venv.sh "$PY312" "$VENVS/asan" '.[test]' EVPY_SANITIZE=1 \
        >"$logdir/build-asan.log" 2>&1; then
    asan=$(gcc -print-file-name=libasan.so)
    pytest_run "py312-asan" "$VENVS/asan" \
        LD_PRELOAD="$asan" PYTHONMALLOC=malloc \
        ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:handle_segv=1 \
        UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
else
    cat "$logdir/build-asan.log"
    failed+=("build-asan")
fi

if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: ${failed[*]}"
    exit 1
fi
echo "all test runs passed"
