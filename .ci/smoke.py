"""Smoke test of an installed evpy wheel (.ci/wheel.sh runs it in a clean
venv, from a directory outside the source tree).

usage: python smoke.py CERTDIR   (CERTDIR: localhost.pem/.key and ca.pem)

Checks evpy is the installed copy, then on an evpy loop: TCP echo through
streams, a subprocess's output and exit status, a TLS handshake and echo.
"""
import asyncio
import os
import ssl
import sys
import sysconfig

import evpy


async def echo_server(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()
    await writer.wait_closed()


async def echo_round_trip(ssl_server=None, ssl_client=None):
    server = await asyncio.start_server(echo_server, '127.0.0.1', 0,
                                        ssl=ssl_server)
    port = server.sockets[0].getsockname()[1]
    kw = {'ssl': ssl_client, 'server_hostname': 'localhost'} \
        if ssl_client else {}
    reader, writer = await asyncio.open_connection('127.0.0.1', port, **kw)
    payload = os.urandom(256 * 1024)
    writer.write(payload)
    await writer.drain()
    got = await reader.readexactly(len(payload))
    assert got == payload, 'echo mismatch'
    version = writer.get_extra_info('ssl_object')
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
    return version.version() if version else None


async def subprocess_round_trip():
    proc = await asyncio.create_subprocess_exec(
        sys.executable, '-c', 'import sys; print(sys.stdin.read().upper());'
        'sys.exit(3)', stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate(b'evpy')
    assert out.strip() == b'EVPY', out
    assert proc.returncode == 3, proc.returncode


async def main(certs):
    loop = asyncio.get_running_loop()
    assert isinstance(loop, evpy.Loop), loop
    await echo_round_trip()
    print('tcp echo: ok')
    await subprocess_round_trip()
    print('subprocess: ok')
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(os.path.join(certs, 'localhost.pem'),
                               os.path.join(certs, 'localhost.key'))
    client_ctx = ssl.create_default_context(
        cafile=os.path.join(certs, 'ca.pem'))
    print('tls echo:', await echo_round_trip(server_ctx, client_ctx))


if __name__ == '__main__':
    site = sysconfig.get_paths()['purelib']
    assert evpy.__file__.startswith(site), ('not the installed evpy',
                                            evpy.__file__)
    print('evpy', evpy.__version__, 'from', os.path.dirname(evpy.__file__))
    evpy.run(asyncio.wait_for(main(sys.argv[1]), 60))
    print('smoke test passed')
