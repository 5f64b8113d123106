"""pytest-asyncio with evpy as the loop (its pytest_asyncio_loop_factories
hook, in a pytest run of its own) and anyio's asyncio backend with a loop
factory (anyio.run and anyio's pytest plugin)."""
import asyncio
import os
import subprocess
import sys
import textwrap

from integration.support import loop_module, need

CONFTEST = '''
import asyncio

def pytest_asyncio_loop_factories(config, item):
    if {kind!r} == "evpy":
        import evpy
        return {{"evpy": evpy.new_event_loop}}
    return {{"asyncio": asyncio.SelectorEventLoop}}
'''

TESTS = '''
import asyncio
import pytest
import pytest_asyncio

@pytest_asyncio.fixture
async def server():
    async def echo(reader, writer):
        writer.write(await reader.read(100))
        await writer.drain()
        writer.close()
    srv = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield srv.sockets[0].getsockname()[1]
    srv.close()
    await srv.wait_closed()

@pytest.mark.asyncio
async def test_loop():
    print("LOOP", type(asyncio.get_running_loop()).__module__)

@pytest.mark.asyncio
async def test_echo(server):
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    writer.write(b"ping")
    assert await reader.read(100) == b"ping"
    writer.close()
    await writer.wait_closed()
'''


def test_pytest_asyncio_loop_factory(kind, tmp_path):
    need('pytest_asyncio')
    (tmp_path / 'conftest.py').write_text(CONFTEST.format(kind=kind))
    (tmp_path / 'test_on_loop.py').write_text(textwrap.dedent(TESTS))
    env = dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD='1')
    proc = subprocess.run(
        [sys.executable, '-m', 'pytest', '-p', 'pytest_asyncio.plugin', '-p',
         'no:cacheprovider', '-s', '-q', '--rootdir', str(tmp_path),
         '-c', os.devnull, str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f'LOOP {loop_module(kind)}' in proc.stdout
    assert '2 passed' in proc.stdout


def test_anyio_loop_factory(kind):
    anyio = need('anyio')
    from conftest import make_loop

    async def echo(stream):
        async with stream:
            await stream.send(await stream.receive())

    async def main():
        loop = type(asyncio.get_running_loop()).__module__
        async with anyio.create_task_group() as tg:
            listener = await anyio.create_tcp_listener(
                local_host='127.0.0.1')
            port = listener.extra(anyio.abc.SocketAttribute.local_port)
            tg.start_soon(listener.serve, echo)
            async with await anyio.connect_tcp('127.0.0.1', port) as conn:
                await conn.send(b'anyio')
                assert await conn.receive() == b'anyio'
            assert await anyio.to_thread.run_sync(sum, [1, 2]) == 3
            with anyio.move_on_after(0.05) as scope:
                await anyio.sleep(10)
            assert scope.cancelled_caught
            tg.cancel_scope.cancel()
        await listener.aclose()
        return loop

    got = anyio.run(main, backend='asyncio', backend_options={
        'loop_factory': lambda: make_loop(kind)})
    assert got == loop_module(kind)


ANYIO_TESTS = '''
import asyncio
import pytest

@pytest.fixture
def anyio_backend():
    if {kind!r} == "evpy":
        import evpy
        return "asyncio", {{"loop_factory": evpy.new_event_loop}}
    return "asyncio", {{"loop_factory": asyncio.SelectorEventLoop}}

@pytest.mark.anyio
async def test_loop():
    print("LOOP", type(asyncio.get_running_loop()).__module__)
'''


def test_anyio_pytest_plugin(kind, tmp_path):
    need('anyio')
    (tmp_path / 'test_anyio_loop.py').write_text(
        ANYIO_TESTS.format(kind=kind))
    env = dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD='1')
    proc = subprocess.run(
        [sys.executable, '-m', 'pytest', '-p', 'anyio.pytest_plugin', '-p',
         'no:cacheprovider', '-s', '-q', '--rootdir', str(tmp_path),
         '-c', os.devnull, str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f'LOOP {loop_module(kind)}' in proc.stdout
    assert '1 passed' in proc.stdout
