"""uvicorn serving an ASGI app with evpy as its loop (the CLI's
``--loop evpy:new_event_loop``), two worker processes sharing a port with
SO_REUSEPORT, driven by httpx: 1,000 requests, all answered."""
import asyncio
import signal
import socket
import subprocess
import sys

from integration.support import loop_module, need, run, wait_for_port

REQUESTS = 1000

APP = '''
import asyncio, os

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    loop = type(asyncio.get_running_loop()).__module__
    body = f"{os.getpid()} {loop} {scope['path']}".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
'''


def reuseport_socket(port):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(('127.0.0.1', port))
    sock.listen(128)
    return sock


def test_two_workers_reuseport(kind, tmp_path):
    need('uvicorn')
    need('httpx')
    import httpx

    (tmp_path / 'asgi_app.py').write_text(APP)
    loop_arg = 'evpy:new_event_loop' if kind == 'evpy' else 'asyncio'
    first = reuseport_socket(0)
    port = first.getsockname()[1]
    socks = [first, reuseport_socket(port)]
    workers = []
    try:
        for sock in socks:
            # Each worker is a uvicorn CLI process on its own SO_REUSEPORT
            # socket (--fd); the kernel spreads connections between them.
            workers.append(subprocess.Popen(
                [sys.executable, '-m', 'uvicorn', '--fd',
                 str(sock.fileno()), '--loop', loop_arg, '--app-dir',
                 str(tmp_path), '--no-access-log', 'asgi_app:app'],
                pass_fds=[sock.fileno()], stderr=subprocess.PIPE))
        for sock in socks:
            sock.close()
        wait_for_port(port, proc=workers[0])

        async def main():
            # 32 clients' worth of concurrency (httpx's pool slows down
            # with a thousand requests queued on it at once).
            limits = httpx.Limits(max_connections=32)
            replies = [None] * REQUESTS
            async with httpx.AsyncClient(limits=limits, timeout=30) as client:
                async def worker(first):
                    for i in range(first, REQUESTS, 32):
                        # A fresh connection every 10 requests, so both
                        # workers get some.
                        headers = {'connection': 'close'} if i % 10 == 0 \
                            else {}
                        r = await client.get(
                            f'http://127.0.0.1:{port}/r{i}', headers=headers)
                        assert r.status_code == 200
                        replies[i] = r.text.split()
                await asyncio.gather(*(worker(n) for n in range(32)))
            return replies

        replies = run(kind, main)
    finally:
        for sock in socks:
            sock.close()
        for proc in workers:
            proc.send_signal(signal.SIGTERM)
        for proc in workers:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert len(replies) == REQUESTS
    assert [path for _, _, path in replies] == [
        f'/r{i}' for i in range(REQUESTS)]
    assert {loop for _, loop, _ in replies} == {loop_module(kind)}
    pids = {int(pid) for pid, _, _ in replies}
    assert pids == {proc.pid for proc in workers}, 'one worker got nothing'
    # A clean shutdown on SIGTERM (uvicorn then re-raises the signal).
    for proc in workers:
        err = proc.stderr.read().decode()
        proc.stderr.close()
        assert 'Application shutdown complete' in err, err
        assert proc.returncode in (0, -signal.SIGTERM), err
