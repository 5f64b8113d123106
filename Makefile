# evpy: build, test and benchmark entry points.
#
#   make bench   install evpy (+ uvloop, httptools; wrk, valgrind, linux-perf,
#                strace from Debian) in a venv and print the benchmark tables
#                (BENCH_ARGS=--quick for a short run, --no-cost without costs)
#   make test    install evpy on CPython 3.11 - 3.15 and run every test:
#                the C unit tests of csrc/core (tests/c, ASan+UBSan), pytest
#                on each, again with the poll backend forced, again on an
#                ASan+UBSan build, and CPython's asyncio suite (conformance);
#                ruff over the Python sources, clang-format over csrc/
#
#   make soak    the soak (tests/soak/): SOAK_CONNS concurrent connections
#                doing checksummed echo for SOAK_SECONDS against an evpy
#                server process, then asyncio's, then SOAK_TLS_CONNS over
#                TLS (defaults: the full local run, 19,000 / 60 s / 2,000)
#   make refcount  sys.gettotalrefcount() flat over evpy workloads on a
#                debug CPython (DBGPY=python3.11-dbg, from apt)
#
# 3.11-3.13 are taken from pyenv when present, else from PATH; 3.14 and 3.15
# from a Debian sid root that .ci/sid-root.sh makes once (debootstrap, as
# root) under $(VENVS)/sid. SID_PYTHONS= (empty) skips them.

PYENV    ?= /root/.pyenv/versions
PY311    ?= $(firstword $(wildcard $(PYENV)/3.11*/bin/python3.11) python3.11)
PY312    ?= $(firstword $(wildcard $(PYENV)/3.12*/bin/python3.12) python3.12)
PY313    ?= $(firstword $(wildcard $(PYENV)/3.13*/bin/python3.13) python3.13)
BENCHPY  ?= $(PY312)
VENVS    ?= .venv
BENCH_ARGS ?=

DBGPY          ?= python3.11-dbg
REFCOUNT_SCALE ?= 50
SOAK_CONNS     ?= 19000
SOAK_SECONDS   ?= 60
SOAK_TLS_CONNS ?= 2000

.PHONY: test bench soak refcount clean

test:
	PY311=$(PY311) PY312=$(PY312) PY313=$(PY313) VENVS=$(VENVS) \
	    bash .ci/test.sh

bench:
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; } \
	    || echo "note: could not install wrk (apt-get); the HTTP row will be skipped"
	@{ command -v valgrind && command -v perf && command -v strace; } >/dev/null \
	    || { apt-get update -qq && apt-get install -y -qq valgrind linux-perf strace; } \
	    || echo "note: could not install valgrind/linux-perf/strace (apt-get); the cost columns will say so"
	bash .ci/venv.sh $(BENCHPY) $(VENVS)/bench '.[bench]'
	$(VENVS)/bench/bin/python -m benchmarks $(BENCH_ARGS)

soak:
	bash .ci/venv.sh $(PY312) $(VENVS)/py312 '.[test]'
	$(VENVS)/py312/bin/python tests/soak/soak.py --conns $(SOAK_CONNS) \
	    --seconds $(SOAK_SECONDS) --tls-conns $(SOAK_TLS_CONNS) \
	    --report $(VENVS)/soak-connections.csv

# sys.gettotalrefcount() over evpy workloads on a debug CPython (Debian's
# python3.11-dbg by default; ~30 s at the default scale). It builds in a
# venv of that interpreter with setuptools from PyPI (pyproject.toml needs
# setuptools >= 77; Debian 12 ships 66).
refcount:
	command -v $(DBGPY) >/dev/null || { apt-get update -qq \
	    && apt-get install -y -qq python3.11-dbg python3.11-venv; }
	[ -x $(VENVS)/dbgpy/bin/python ] || { $(DBGPY) -m venv $(VENVS)/dbgpy \
	    && $(VENVS)/dbgpy/bin/python -m pip install -q 'setuptools>=77'; }
	rm -rf $(VENVS)/dbg $(VENVS)/dbg-tmp
	$(VENVS)/dbgpy/bin/python setup.py -q build_ext --build-lib $(VENVS)/dbg \
	    --build-temp $(VENVS)/dbg-tmp
	cp evpy/*.py $(VENVS)/dbg/evpy/
	PYTHONPATH=$(VENVS)/dbg $(VENVS)/dbgpy/bin/python tests/soak/refcount.py \
	    $(REFCOUNT_SCALE)

clean:
	# The sid root may still have /proc and /dev bound in: unbind first.
	[ ! -d $(VENVS)/sid ] || bash .ci/sid-root.sh umount $(VENVS)/sid
	rm -rf --one-file-system build $(VENVS) evpy/*.so *.egg-info
