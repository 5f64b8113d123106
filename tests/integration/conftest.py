"""Helpers for the integration tests: real libraries and servers on evpy.

Every test runs on evpy and on asyncio's default loop (the ``kind``
parametrization of tests/conftest.py, leak guards included). A library that
is not installed skips its tests, naming it; .ci/test.sh installs them all
(pyproject's ``integration`` extra) and the Debian packages for the servers
(postgresql, redis-server).
"""
import contextlib
import os
import pathlib
import shutil
import subprocess
import tempfile
import time

import pytest

from integration.support import find_program, free_port, wait_for_port


def _check(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode:
        raise RuntimeError(f'{cmd} failed: {proc.stdout}{proc.stderr}')


def _as_postgres_user(cmd):
    # PostgreSQL refuses to run as root: run it as Debian's postgres user.
    if os.geteuid() == 0:
        return ['runuser', '-u', 'postgres', '--', *cmd]
    return cmd


@pytest.fixture(scope='session')
def postgres():
    """A PostgreSQL server of its own (initdb in a temp dir, pg_ctl start on
    a free port, a Unix socket in the same dir); stopped after the session.
    Yields a dict of connection parameters."""
    initdb = find_program('initdb', '/usr/lib/postgresql/*/bin/initdb')
    pg_ctl = os.path.join(os.path.dirname(initdb), 'pg_ctl')
    # Not under pytest's temp root: the postgres user must reach it.
    base = pathlib.Path(tempfile.mkdtemp(prefix='evpy-pg-'))
    data = base / 'data'
    if os.geteuid() == 0:
        shutil.chown(base, 'postgres', 'postgres')
    port = free_port()
    _check(_as_postgres_user(
        [initdb, '-D', str(data), '-U', 'evpy', '-A', 'trust', '-E', 'UTF8',
         '--no-sync']))
    opts = (f'-p {port} -k {base} -c listen_addresses=127.0.0.1 '
            '-c fsync=off -c max_connections=50')
    # pg_ctl start daemonizes: the server is no child of this process.
    _check(_as_postgres_user(
        [pg_ctl, '-D', str(data), '-o', opts, '-l', str(base / 'log'),
         '-w', 'start']))
    try:
        yield {'host': '127.0.0.1', 'port': port, 'user': 'evpy',
               'database': 'postgres'}
    finally:
        subprocess.run(_as_postgres_user(
            [pg_ctl, '-D', str(data), '-m', 'immediate', '-w', 'stop']),
            capture_output=True, timeout=120)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope='session')
def redis_server(tmp_path_factory):
    """A redis-server of its own on a free port (daemonized, in a temp
    dir), shut down after the session. Yields its port."""
    server = find_program('redis-server')
    base = tmp_path_factory.mktemp('redis')
    port = free_port()
    subprocess.run(
        [server, '--port', str(port), '--bind', '127.0.0.1', '--dir',
         str(base), '--save', '', '--appendonly', 'no', '--daemonize', 'yes',
         '--pidfile', str(base / 'pid'), '--logfile', str(base / 'log')],
        check=True, timeout=30)
    wait_for_port(port)
    try:
        yield port
    finally:
        with contextlib.suppress(OSError, ValueError):
            pid = int((base / 'pid').read_text())
            os.kill(pid, 15)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                os.kill(pid, 0)
                time.sleep(0.05)
