"""WebSocket client for tests/websocket.rs, on Python's `websockets` package.

Usage: ws_client.py PORT CONNECTIONS

Opens CONNECTIONS connections to ws://127.0.0.1:PORT/ one after the other; on each,
sends a text message, a binary one, a text message in two fragments and a ping, then
closes. Prints one line per connection: `shard=N text=... fragmented=...
binary_sent=SHA binary_back=SHA pong=yes close=CODE`. Then sends one message over the
server's limit and prints `refused=CODE`, the close code the server answered with.
The Rust test judges the lines; this script only reports what came back.
"""

import asyncio
import hashlib
import os
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

# Seconds any one step may take: a hang detector, never a timing under test.
BOUND = 20


async def step(awaitable):
    return await asyncio.wait_for(awaitable, BOUND)


def digest(data):
    kind = "bytes" if isinstance(data, bytes) else type(data).__name__
    return f"{kind}:{hashlib.sha256(data).hexdigest()}"


async def echo_session(url):
    async with connect(url, max_size=1 << 21) as ws:
        shard = ws.response.headers["x-shard"]
        await step(ws.send("héllo-wörld"))
        text = await step(ws.recv())
        payload = os.urandom(256 * 1024)
        await step(ws.send(payload))
        back = await step(ws.recv())
        # One message, two frames: the server must reassemble it.
        await step(ws.send(["frag", "mented"]))
        fragmented = await step(ws.recv())
        await step(await ws.ping())
        await step(ws.close())
        print(
            f"shard={shard} text={text} fragmented={fragmented} "
            f"binary_sent={digest(payload)} binary_back={digest(back)} "
            f"pong=yes close={ws.close_code}",
            flush=True,
        )


async def too_big(url):
    async with connect(url) as ws:
        try:
            await step(ws.send(os.urandom(2 << 20)))
            await step(ws.recv())
            print("refused=no", flush=True)
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None
            print(f"refused={code}", flush=True)


async def main(port, connections):
    url = f"ws://127.0.0.1:{port}/"
    for _ in range(connections):
        await echo_session(url)
    await too_big(url)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
