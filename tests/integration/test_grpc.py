"""grpcio's asyncio API (grpc.aio): unary and streaming calls, server and
client on one loop (generic handlers: raw bytes, no generated code)."""
import asyncio

from integration.support import loop_module, need, run

SERVICE = 'evpy.Echo'


def test_unary_and_streaming(kind):
    grpc = need('grpc')
    from grpc import aio

    async def unary(request, context):
        return request.upper()

    async def server_stream(request, context):
        for i in range(int(request)):
            yield b'%d' % i

    async def client_stream(requests, context):
        total = 0
        async for request in requests:
            total += int(request)
        return b'%d' % total

    async def bidi(requests, context):
        async for request in requests:
            yield request[::-1]

    async def failing(request, context):
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, 'no')

    handler = grpc.method_handlers_generic_handler(SERVICE, {
        'Unary': grpc.unary_unary_rpc_method_handler(unary),
        'ServerStream': grpc.unary_stream_rpc_method_handler(server_stream),
        'ClientStream': grpc.stream_unary_rpc_method_handler(client_stream),
        'Bidi': grpc.stream_stream_rpc_method_handler(bidi),
        'Fail': grpc.unary_unary_rpc_method_handler(failing),
    })

    async def main():
        server = aio.server()
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port('127.0.0.1:0')
        await server.start()
        try:
            async with aio.insecure_channel(f'127.0.0.1:{port}') as channel:
                def method(kind_, name):
                    return getattr(channel, kind_)(f'/{SERVICE}/{name}')
                unary_call = method('unary_unary', 'Unary')
                replies = await asyncio.gather(
                    *(unary_call(b'hi %d' % i) for i in range(200)))
                assert replies == [b'HI %d' % i for i in range(200)]

                stream = method('unary_stream', 'ServerStream')(b'1000')
                got = [r async for r in stream]
                assert got == [b'%d' % i for i in range(1000)]

                async def numbers():
                    for i in range(1000):
                        yield b'%d' % i
                total = await method('stream_unary', 'ClientStream')(
                    numbers())
                assert total == b'%d' % sum(range(1000))

                call = method('stream_stream', 'Bidi')()
                for i in range(200):
                    await call.write(b'abc%d' % i)
                    assert await call.read() == (b'abc%d' % i)[::-1]
                await call.done_writing()
                assert await call.code() == grpc.StatusCode.OK

                try:
                    await method('unary_unary', 'Fail')(b'')
                except aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION
                else:
                    raise AssertionError('no error')
        finally:
            await server.stop(None)
        return type(asyncio.get_running_loop()).__module__

    assert run(kind, main) == loop_module(kind)
