"""Helpers the integration tests share (fixtures are in conftest.py)."""
import asyncio
import glob
import shutil
import socket
import time

import pytest

from conftest import make_loop


def need(module):
    """Import `module` or skip: the package is not installed here
    (pip install '.[integration]')."""
    return pytest.importorskip(
        module, reason=f'{module} is not installed (the integration extra: '
        "pip install '.[integration]')")


def run(kind, coro_fn, *args, timeout=120):
    """Run coro_fn(*args) on a fresh loop of `kind` (asyncio.Runner with a
    loop factory), with a timeout; the loop is closed after."""
    async def main():
        return await asyncio.wait_for(coro_fn(*args), timeout)
    with asyncio.Runner(loop_factory=lambda: make_loop(kind)) as runner:
        return runner.run(main())


def loop_module(kind):
    """The module a running loop's class comes from, per kind."""
    return 'evpy.loop' if kind == 'evpy' else 'asyncio.unix_events'


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_for_port(port, timeout=30.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f'server exited with {proc.returncode}')
        try:
            with socket.create_connection(('127.0.0.1', port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f'nothing listens on port {port}')


def find_program(name, debian_glob=None):
    """A server program on PATH, or in Debian's versioned directory."""
    path = shutil.which(name)
    if path is None and debian_glob:
        found = sorted(glob.glob(debian_glob))
        path = found[-1] if found else None
    if path is None:
        pytest.skip(f'{name} is not installed (Debian package; .ci/test.sh '
                    'installs it with apt-get when run as root)')
    return path
