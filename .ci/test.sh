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
    # usage: pytest_run NAME VENV [ENV=VALUE...] [-- PYTEST-ARG...]
    # (without pytest arguments: the whole suite)
    local name=$1 venv=$2
    shift 2
    local envs=() args=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do envs+=("$1"); shift; done
    [ $# -gt 0 ] && shift
    args=("$@")
    [ ${#args[@]} -gt 0 ] || args=(--ignore=integration .)
    echo "== $name"
    # Run from tests/ so `import evpy` finds the installed package, not
    # the source tree.
    if (cd tests && env "${envs[@]}" "../$venv/bin/python" -m pytest -q -p no:cacheprovider \
            --rootdir=.. -c ../pyproject.toml "${args[@]}" ) >"$logdir/$name.log" 2>&1; then
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

# CPython 3.14 and 3.15 come from Debian sid, in a root made once with
# debootstrap and cached under $VENVS/sid (.ci/sid-root.sh). It is made in
# the background while 3.11-3.13 run; the tests run inside it (chroot) on a
# copy of this tree.
SID_ROOT=$VENVS/sid
SID_PYTHONS=${SID_PYTHONS:-"314 315"}
sid_ready=0
if [ -n "$SID_PYTHONS" ]; then
    bash .ci/sid-root.sh ensure "$SID_ROOT" >"$logdir/sid-root.log" 2>&1 &
    sid_pid=$!
fi
cleanup() {
    if [ -d "$SID_ROOT" ]; then
        bash .ci/sid-root.sh umount "$SID_ROOT" || true
    fi
}
trap cleanup EXIT

sid_run() {
    # usage: sid_run CMD...: CMD in /evpy/src inside the sid root.
    bash .ci/sid-root.sh run "$SID_ROOT" /bin/bash -c "cd /evpy/src && $*"
}

echo "== kqueue backend compile check (stub <sys/event.h>)"
if ! gcc -std=c11 -Wall -Wextra -Wshadow -Werror -fsyntax-only -D_GNU_SOURCE \
        -I.ci/kqueue-stub -DEVPY_HAVE_KQUEUE=1 \
        csrc/core/poller_kqueue.c csrc/core/poller.c; then
    failed+=("kqueue-compile")
fi

echo "== C style (clang-format --dry-run -Werror, .ci/clang-format.sh)"
if ! bash .ci/clang-format.sh >"$logdir/clang-format.log" 2>&1; then
    grep -c 'error:' "$logdir/clang-format.log" | sed 's/$/ places to reformat/'
    head -n 20 "$logdir/clang-format.log"
    failed+=("clang-format")
fi

echo "== C unit tests of csrc/core (ASan+UBSan, tests/c/run.sh)"
if ! bash tests/c/run.sh >"$logdir/ctest.log" 2>&1; then
    cat "$logdir/ctest.log"
    failed+=("ctest")
else
    tail -n 1 "$logdir/ctest.log"
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

# Lint (ruff from the test extra; rules in pyproject.toml): PEP 8 at 79
# columns, pyflakes, docstrings on the package's public API. Under a second.
echo "== lint (ruff)"
if ! "$VENVS/py312/bin/ruff" check --no-cache evpy tests benchmarks \
        conformance; then
    failed+=("lint")
fi

echo "== wheel (build, auditwheel repair, smoke test in a clean venv)"
if bash .ci/wheel.sh "$PY312" "$VENVS/wheel" >"$logdir/wheel.log" 2>&1; then
    grep -E '^(repaired|smoke test)' "$logdir/wheel.log"
else
    tail -n 40 "$logdir/wheel.log"
    failed+=("wheel")
fi

# tests/integration on 3.12: uvicorn, aiohttp, websockets, pytest-asyncio,
# anyio, asyncpg, psycopg, redis-py and grpcio on evpy and on asyncio's loop
# (~1 minute on 2 cores), with PostgreSQL and redis-server from Debian.
echo "== integration (py312)"
if ! { compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null \
        && command -v redis-server >/dev/null; }; then
    if [ "$(id -u)" = 0 ]; then
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq postgresql redis-server; } \
            >"$logdir/integration-apt.log" 2>&1 \
            || echo "note: apt-get could not install postgresql/redis-server"
    else
        echo "note: not root: postgresql/redis-server not installed (those tests skip)"
    fi
fi
if bash .ci/venv.sh "$PY312" "$VENVS/integ" '.[integration]' \
        >"$logdir/build-integ.log" 2>&1; then
    # pytest-asyncio's plugin stays out of this run (its test runs pytest
    # again with it, in a subprocess).
    if (cd tests && "../$VENVS/integ/bin/python" -m pytest -q -p no:cacheprovider \
            -p no:asyncio -rs --rootdir=.. -c ../pyproject.toml integration) \
            >"$logdir/integration.log" 2>&1; then
        grep -E '^SKIPPED' "$logdir/integration.log" || true
        tail -n 1 "$logdir/integration.log"
    else
        tail -n 60 "$logdir/integration.log"
        failed+=("integration")
    fi
else
    cat "$logdir/build-integ.log"
    failed+=("build-integ")
fi

if [ -n "$SID_PYTHONS" ]; then
    echo "== sid root (CPython 3.14, 3.15)"
    if wait "$sid_pid" && bash .ci/sid-root.sh mount "$SID_ROOT"; then
        sid_ready=1
        # A fresh copy of the tree (no .git, venvs or build products); the
        # venvs and logs inside the root are kept between runs.
        rm -rf "$SID_ROOT/evpy/src"
        mkdir -p "$SID_ROOT/evpy/src" "$SID_ROOT/evpy/logs"
        tar -c --exclude=./.venv --exclude=./build --exclude=./.git \
            --exclude='*.so' --exclude='*.o' --exclude=__pycache__ \
            --exclude='*.egg-info' --exclude=./conformance/results . \
            | tar -x -C "$SID_ROOT/evpy/src"
    else
        cat "$logdir/sid-root.log"
        failed+=("sid-root")
    fi
fi

for v in $SID_PYTHONS; do
    [ "$sid_ready" = 1 ] || break
    py=python${v:0:1}.${v:1}
    echo "== build py$v (sid)"
    if ! sid_run "EVPY_WERROR=1 bash .ci/venv.sh $py /evpy/venvs/py$v '.[test]'" \
            >"$logdir/build-py$v.log" 2>&1; then
        cat "$logdir/build-py$v.log"
        failed+=("build-py$v")
        continue
    fi
    echo "== py$v"
    if sid_run "cd tests && /evpy/venvs/py$v/bin/python -m pytest -q \
            -p no:cacheprovider --rootdir=.. -c ../pyproject.toml \
            --ignore=integration ." \
            >"$logdir/py$v.log" 2>&1; then
        tail -n 1 "$logdir/py$v.log"
    else
        tail -n 60 "$logdir/py$v.log"
        failed+=("py$v")
    fi
    echo "== conformance-py$v"
    if sid_run "/evpy/venvs/py$v/bin/python conformance/runner.py -j2 --check \
            --json /evpy/logs/conformance-py$v.json" \
            >"$logdir/conformance-py$v.log" 2>&1; then
        grep -E '^TOTAL' "$logdir/conformance-py$v.log"
    else
        tail -n 40 "$logdir/conformance-py$v.log"
        failed+=("conformance-py$v")
    fi
    cp "$SID_ROOT/evpy/logs/conformance-py$v.json" "$logdir/" 2>/dev/null || true
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

# The soak, short (tests/soak/; `make soak` is the long local run): 500
# connections for 8 s on evpy and on asyncio's loop, 100 over TLS on each
# (~40 s).
echo "== soak (short)"
if "$VENVS/py312/bin/python" tests/soak/soak.py --conns 500 --seconds 8 \
        --tls-conns 100 >"$logdir/soak.log" 2>&1; then
    tail -n 4 "$logdir/soak.log" | cut -c1-200
else
    tail -n 20 "$logdir/soak.log"
    failed+=("soak")
fi

# Fault injection (test-only build, csrc/core/faults.h): test_faults.py
# (echo, pipes, wake-ups under every injected errno; ~10 s), then evpy's
# side of the suite with EINTR/EAGAIN injected into 10% of the wrapped
# syscalls, which must change nothing (~30 s). Deselected there, as they
# assume what a transient EAGAIN/EINTR legitimately changes: that a small
# write() goes out at once (flow-control counts; write-after-close of a
# non-empty buffer is sent, as asyncio's) and that one poll sees readiness.
echo "== build py312-faults"
if bash .ci/venv.sh "$PY312" "$VENVS/faults" '.[test]' EVPY_FAULTS=1 \
        >"$logdir/build-faults.log" 2>&1; then
    pytest_run "py312-faults" "$VENVS/faults" EVPY_REQUIRE_FAULTS=1 -- \
        test_faults.py
    pytest_run "py312-faults-transient" "$VENVS/faults" \
        EVPY_FAULT_RATE=0.1 EVPY_FAULT_MODE=transient EVPY_FAULT_SEED=1 -- \
        -k evpy . \
        --deselect "tests/test_tcp.py::test_flow_control_slow_reader[evpy]" \
        --deselect "tests/test_tls.py::test_write_flow_control[evpy]" \
        --deselect "tests/test_tcp.py::test_write_to_closed_transport[evpy]" \
        --deselect \
        "tests/test_readers.py::test_reader_replaced_by_earlier_callback_same_batch[evpy]"
    # The soak with 10% of the client's and the server's syscalls failing
    # with EINTR/EAGAIN: every byte must still arrive intact (~20 s).
    echo "== soak under transient faults (py312-faults)"
    if EVPY_FAULT_RATE=0.1 EVPY_FAULT_MODE=transient EVPY_FAULT_SEED=7 \
            "$VENVS/faults/bin/python" tests/soak/soak.py --conns 300 \
            --seconds 6 --tls-conns 60 --loops evpy \
            >"$logdir/soak-faults.log" 2>&1; then
        tail -n 2 "$logdir/soak-faults.log" | cut -c1-200
    else
        tail -n 20 "$logdir/soak-faults.log"
        failed+=("soak-faults")
    fi
else
    cat "$logdir/build-faults.log"
    failed+=("build-faults")
fi

# Reference counts on a debug CPython (`make refcount`: Debian's
# python3.11-dbg, installed if missing): sys.gettotalrefcount() flat over
# evpy's workloads, subprocesses included (~1-2 min with the install).
echo "== refcount (python3.11-dbg)"
if make -s refcount VENVS="$VENVS" >"$logdir/refcount.log" 2>&1; then
    grep -E '^[a-z_]+ +n=' "$logdir/refcount.log" | tr -s ' ' | paste -sd';'
else
    tail -n 30 "$logdir/refcount.log"
    failed+=("refcount")
fi

if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: ${failed[*]}"
    exit 1
fi
echo "all test runs passed"
