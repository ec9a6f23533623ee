"""asyncio on the workloads of benches/compare.rs; prints {"key": median seconds} as JSON.

Env: COMPARE_SCALE (default 1.0) scales every N, COMPARE_ONLY=substring filters keys.
"""

import asyncio
import json
import os
import statistics
import threading
import time

ROUNDS = 5
SCALE = float(os.environ.get("COMPARE_SCALE", "1.0"))
ONLY = os.environ.get("COMPARE_ONLY", "")


def scaled(base):
    return max(2, round(base * SCALE))


def fresh(body):
    """Runs body(loop) on a new loop and returns its seconds (setup and close excluded)."""
    loop = asyncio.new_event_loop()
    try:
        start = time.perf_counter()
        body(loop)
        return time.perf_counter() - start
    finally:
        loop.close()


class Counter:
    """Counts hits; the n-th calls done()."""

    def __init__(self, n, done):
        self.count, self.n, self.done = 0, n, done

    def hit(self):
        self.count += 1
        if self.count == self.n:
            self.done()


def call_soon_batch(n):
    def body(loop):
        c = Counter(n, lambda: None)
        for _ in range(n):
            loop.call_soon(c.hit)
        loop.call_soon(loop.stop)
        loop.run_forever()
        assert c.count == n

    return fresh(body)


def call_soon_chain(n):
    def body(loop):
        def step(left):
            if left == 0:
                loop.stop()
            else:
                loop.call_soon(step, left - 1)

        step(n)
        loop.run_forever()

    return fresh(body)


def tasks(n):
    def body(loop):
        c = Counter(n, loop.stop)

        async def work():
            c.hit()

        for _ in range(n):
            loop.create_task(work())
        loop.run_forever()
        assert c.count == n

    return fresh(body)


def threadsafe(n):
    def body(loop):
        c = Counter(n, loop.stop)
        producer = threading.Thread(
            target=lambda: [loop.call_soon_threadsafe(c.hit) for _ in range(n)]
        )
        producer.start()
        loop.run_forever()
        producer.join()
        assert c.count == n

    return fresh(body)


def timers(n):
    """Deadlines spread over 0..20ms from a common start; odd timers are cancelled."""

    def body(loop):
        c = Counter((n + 1) // 2, loop.stop)
        start = loop.time()
        handles = [loop.call_at(start + 0.020 * i / n, c.hit) for i in range(n)]
        for h in handles[1::2]:
            h.cancel()
        loop.run_forever()
        assert c.count == c.n

    return fresh(body)


def queue(n):
    """n items from a producer task to a consumer task through an unbounded
    asyncio.Queue, the producer yielding every 64 items (as the Rust side does)."""
    def body(loop):
        q = asyncio.Queue()

        async def consumer():
            total = 0
            for _ in range(n):
                total += await q.get()
            return total

        async def producer():
            for i in range(n):
                await q.put(i)
                if i % 64 == 0:
                    await asyncio.sleep(0)

        async def both():
            c = asyncio.ensure_future(consumer())
            await producer()
            assert await c == n * (n - 1) // 2

        loop.run_until_complete(both())

    return fresh(body)


WORKLOADS = {
    "queue": (queue, 1e6),
    "call_soon_batch": (call_soon_batch, 1e6),
    "call_soon_chain": (call_soon_chain, 1e6),
    "tasks": (tasks, 1e6),
    "threadsafe": (threadsafe, 1e6),
    "timers": (timers, 2e5),
}


def main():
    results = {}
    for key, (run, base) in WORKLOADS.items():
        if ONLY in key:
            n = scaled(base)
            results[key] = statistics.median(run(n) for _ in range(ROUNDS))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
