#!/usr/bin/env python3
"""The Python echo servers of bench/echo_bench.sh: asyncio's protocol echo or its
streams echo, on asyncio's own loop or on uvloop's (--uvloop).

Prints "listening on 127.0.0.1:PORT" once it listens (--port 0 picks a free port).
"""
import argparse
import asyncio


class Echo(asyncio.Protocol):
    """What comes in goes straight back out (uvloop's benchmark protocol)."""

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


async def echo_stream(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    writer.close()


async def serve(mode, port):
    loop = asyncio.get_running_loop()
    if mode == "protocol":
        server = await loop.create_server(Echo, "127.0.0.1", port)
    else:
        server = await asyncio.start_server(echo_stream, "127.0.0.1", port)
    print(f"listening on 127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=["protocol", "streams"], default="protocol")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.run(serve(args.mode, args.port))
    else:
        asyncio.run(serve(args.mode, args.port))


if __name__ == "__main__":
    main()
