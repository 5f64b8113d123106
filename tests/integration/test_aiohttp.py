"""aiohttp server and client: HTTP requests, websockets, a 50 MiB body
streamed each way with its checksum checked."""
import asyncio
import hashlib

from integration.support import loop_module, need, run

BODY = 50 * 1024 * 1024
CHUNK = 256 * 1024


def chunks():
    # Deterministic, not compressible to nothing: a counter pattern.
    block = bytes(range(256)) * (CHUNK // 256)
    for i in range(BODY // CHUNK):
        yield block[i % 256:] + block[:i % 256]


def expected_digest():
    h = hashlib.sha256()
    for chunk in chunks():
        h.update(chunk)
    return h.hexdigest()


def test_http_websocket_streaming(kind):
    need('aiohttp')
    from aiohttp import ClientSession, WSMsgType, web

    async def hello(request):
        loop = type(asyncio.get_running_loop()).__module__
        return web.json_response({'loop': loop,
                                  'n': int(request.query['n'])})

    async def upload(request):
        h = hashlib.sha256()
        size = 0
        async for chunk in request.content.iter_chunked(CHUNK):
            h.update(chunk)
            size += len(chunk)
        return web.json_response({'size': size, 'sha256': h.hexdigest()})

    async def download(request):
        response = web.StreamResponse()
        response.content_length = BODY
        await response.prepare(request)
        for chunk in chunks():
            await response.write(chunk)
        await response.write_eof()
        return response

    async def ws_echo(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(msg.data.upper())
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data[::-1])
        return ws

    async def main():
        app = web.Application(client_max_size=BODY + 1)
        app.router.add_get('/hello', hello)
        app.router.add_post('/upload', upload)
        app.router.add_get('/download', download)
        app.router.add_get('/ws', ws_echo)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, '127.0.0.1', 0)
        await site.start()
        port = runner.addresses[0][1]
        url = f'http://127.0.0.1:{port}'
        digest = expected_digest()
        try:
            async with ClientSession() as session:
                async def get(n):
                    async with session.get(f'{url}/hello',
                                           params={'n': n}) as r:
                        assert r.status == 200
                        return await r.json()
                replies = await asyncio.gather(*(get(n) for n in range(200)))
                assert [r['n'] for r in replies] == list(range(200))
                server_loop = {r['loop'] for r in replies}

                async def body():
                    for chunk in chunks():
                        yield chunk
                async with session.post(f'{url}/upload', data=body()) as r:
                    assert await r.json() == {'size': BODY,
                                              'sha256': digest}

                h = hashlib.sha256()
                size = 0
                async with session.get(f'{url}/download') as r:
                    async for chunk in r.content.iter_chunked(CHUNK):
                        h.update(chunk)
                        size += len(chunk)
                assert (size, h.hexdigest()) == (BODY, digest)

                async with session.ws_connect(f'{url}/ws') as ws:
                    for i in range(100):
                        await ws.send_str(f'hi {i}')
                        assert (await ws.receive_str()) == f'HI {i}'
                    await ws.send_bytes(b'abc')
                    assert await ws.receive_bytes() == b'cba'
                    await ws.close()
        finally:
            await runner.cleanup()
        return server_loop

    assert run(kind, main) == {loop_module(kind)}
