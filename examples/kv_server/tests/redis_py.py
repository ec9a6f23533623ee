#!/usr/bin/env python3
"""redis-py (a client this project did not write) against kv_server, checked by a model.

Starts the kv_server binary (2 shards) on a free port of 127.0.0.1, then, once with
redis-py's defaults (RESP3: it sends HELLO 3 and CLIENT SETINFO on connect) and once
with protocol=2, runs a seeded random workload over every data type in pipelines of
1 to 16 commands (a quarter of them sent as MULTI/EXEC transactions) on a small key space (so keys change type, cross shards and hit
WRONGTYPE), and checks each reply against a model of what Redis answers.

Usage: redis_py.py KV_SERVER_BINARY [ROUNDS]   (exits 1 on the first mismatch)
"""
import random
import socket
import subprocess
import sys

import redis

KEYS = [f"k{i}" for i in range(12)]
MEMBERS = ["a", "b", "c", "d", "e"]
WRONGTYPE = "WRONGTYPE"


class Mismatch(Exception):
    pass


def norm_pairs(items):
    """(member, score) pairs as redis-py gives them in either protocol."""
    return [(m, float(s)) for m, s in items]


class Model:
    """What Redis holds: key -> (type, value)."""

    def __init__(self):
        self.data = {}

    def typed(self, key, kind):
        """The value of `key` if it has type `kind`; None if missing; raises WRONGTYPE."""
        entry = self.data.get(key)
        if entry is None:
            return None
        if entry[0] != kind:
            raise ValueError(WRONGTYPE)
        return entry[1]

    def drop_if_empty(self, key):
        entry = self.data.get(key)
        if entry and entry[0] != "string" and not entry[1]:
            del self.data[key]


def random_op(rng):
    """(name, args, redis-py call) for one random command."""
    k = rng.choice(KEYS)
    k2 = rng.choice(KEYS)
    m = rng.choice(MEMBERS)
    v = rng.choice(["1", "2", "x", "10"])
    n = rng.randint(0, 3)
    score = rng.choice([0, 1, 1.5, 2, -3])
    ops = [
        ("set", (k, v)), ("get", (k,)), ("append", (k, v)), ("strlen", (k,)),
        ("incr", (k,)), ("del", (k, k2)), ("exists", (k, k2)), ("type", (k,)),
        ("mset", ({k: v, k2: v},)), ("mget", (k, k2)),
        ("lpush", (k, m, v)), ("rpush", (k, m)), ("lpop", (k, n or None)),
        ("rpop", (k,)), ("lrange", (k, 0, -1)), ("llen", (k,)), ("lindex", (k, n - 2)),
        ("hset", (k, m, v)), ("hget", (k, m)), ("hdel", (k, m)), ("hgetall", (k,)),
        ("hlen", (k,)), ("hincrby", (k, m, n)), ("hexists", (k, m)),
        ("sadd", (k, m, v)), ("srem", (k, m)), ("smembers", (k,)),
        ("sismember", (k, m)), ("scard", (k,)), ("spop", (k, n or None)),
        ("zadd", (k, {m: score})), ("zincrby", (k, 1, m)), ("zscore", (k, m)),
        ("zrange", (k, 0, -1)), ("zcard", (k,)), ("zrem", (k, m)),
        ("zpopmin", (k, n or None)), ("dbsize", ()),
    ]
    return rng.choice(ops)


def call(pipe, name, args):
    if name == "zrange":
        pipe.zrange(*args, withscores=True)
    elif name == "lpop":
        pipe.lpop(args[0], args[1])
    elif name == "spop":
        pipe.spop(args[0], args[1])
    elif name == "zpopmin":
        pipe.zpopmin(args[0], args[1])
    elif name == "del":
        pipe.delete(*args)
    else:
        getattr(pipe, name)(*args)


def expect(model, name, args, got):
    """Checks `got` against the model and updates it. Raises Mismatch."""
    d = model.data

    def check(want):
        if got != want:
            raise Mismatch(f"{name}{args}: got {got!r}, want {want!r}")

    def wrongtype():
        if not (isinstance(got, redis.ResponseError) and str(got).startswith(WRONGTYPE)):
            raise Mismatch(f"{name}{args}: got {got!r}, want a WRONGTYPE error")

    try:
        if name == "set":
            d[args[0]] = ("string", args[1].encode())
            check(True)
        elif name == "get":
            check(model.typed(args[0], "string"))
        elif name == "append":
            cur = model.typed(args[0], "string") or b""
            d[args[0]] = ("string", cur + args[1].encode())
            check(len(cur) + len(args[1]))
        elif name == "strlen":
            check(len(model.typed(args[0], "string") or b""))
        elif name == "incr":
            cur = model.typed(args[0], "string")
            try:
                new = int(cur or b"0") + 1
            except ValueError:
                if not isinstance(got, redis.ResponseError):
                    raise Mismatch(f"incr on {cur!r}: got {got!r}, want an error")
                return
            d[args[0]] = ("string", str(new).encode())
            check(new)
        elif name == "del":
            n = sum(1 for k in set(args) if d.pop(k, None) is not None)
            check(n)
        elif name == "exists":
            check(sum(1 for k in args if k in d))
        elif name == "type":
            check(d[args[0]][0].encode() if args[0] in d else b"none")
        elif name == "mset":
            for k, v in args[0].items():
                d[k] = ("string", v.encode())
            check(True)
        elif name == "mget":
            check([d[k][1] if k in d and d[k][0] == "string" else None for k in args])
        elif name in ("lpush", "rpush"):
            cur = model.typed(args[0], "list")
            cur = list(cur) if cur else []
            for e in args[1:]:
                if name == "lpush":
                    cur.insert(0, e.encode())
                else:
                    cur.append(e.encode())
            d[args[0]] = ("list", cur)
            check(len(cur))
        elif name in ("lpop", "rpop"):
            count = args[1] if len(args) > 1 else None
            cur = model.typed(args[0], "list")
            if cur is None:
                check(None)
                return
            if count is None:
                check(cur.pop(0) if name == "lpop" else cur.pop())
            else:
                taken = cur[:count]
                del cur[:count]
                check(taken)
            model.drop_if_empty(args[0])
        elif name == "lrange":
            check(list(model.typed(args[0], "list") or []))
        elif name == "llen":
            check(len(model.typed(args[0], "list") or []))
        elif name == "lindex":
            cur = model.typed(args[0], "list") or []
            i = args[1]
            check(cur[i] if -len(cur) <= i < len(cur) else None)
        elif name == "hset":
            cur = model.typed(args[0], "hash")
            cur = cur if cur is not None else {}
            new = args[1].encode() not in cur
            cur[args[1].encode()] = args[2].encode()
            d[args[0]] = ("hash", cur)
            check(int(new))
        elif name == "hget":
            check((model.typed(args[0], "hash") or {}).get(args[1].encode()))
        elif name == "hdel":
            cur = model.typed(args[0], "hash") or {}
            check(int(cur.pop(args[1].encode(), None) is not None))
            model.drop_if_empty(args[0])
        elif name == "hgetall":
            check(dict(model.typed(args[0], "hash") or {}))
        elif name == "hlen":
            check(len(model.typed(args[0], "hash") or {}))
        elif name == "hincrby":
            cur = model.typed(args[0], "hash")
            cur = cur if cur is not None else {}
            field = args[1].encode()
            try:
                new = int(cur.get(field, b"0")) + args[2]
            except ValueError:
                if not isinstance(got, redis.ResponseError):
                    raise Mismatch(f"hincrby on {cur.get(field)!r}: got {got!r}")
                return
            cur[field] = str(new).encode()
            d[args[0]] = ("hash", cur)
            check(new)
        elif name == "hexists":
            check(args[1].encode() in (model.typed(args[0], "hash") or {}))
        elif name == "sadd":
            cur = model.typed(args[0], "set")
            cur = cur if cur is not None else set()
            new = {e.encode() for e in args[1:]} - cur
            cur |= new
            d[args[0]] = ("set", cur)
            check(len(new))
        elif name == "srem":
            cur = model.typed(args[0], "set") or set()
            had = args[1].encode() in cur
            cur.discard(args[1].encode())
            model.drop_if_empty(args[0])
            check(int(had))
        elif name == "smembers":
            check(set(model.typed(args[0], "set") or set()))
        elif name == "sismember":
            check(args[1].encode() in (model.typed(args[0], "set") or set()))
        elif name == "scard":
            check(len(model.typed(args[0], "set") or set()))
        elif name == "spop":
            count = args[1]
            cur = model.typed(args[0], "set")
            if cur is None:
                check(None if count is None else ([] if isinstance(got, list) else set()))
                return
            popped = [got] if count is None else list(got)
            want_n = 1 if count is None else min(count, len(cur))
            if len(popped) != want_n or not set(popped) <= cur or len(set(popped)) != want_n:
                raise Mismatch(f"spop{args}: got {got!r} from {cur!r}")
            cur -= set(popped)
            model.drop_if_empty(args[0])
        elif name == "zadd":
            cur = model.typed(args[0], "zset")
            cur = cur if cur is not None else {}
            (m, s), = args[1].items()
            new = m.encode() not in cur
            cur[m.encode()] = float(s)
            d[args[0]] = ("zset", cur)
            check(int(new))
        elif name == "zincrby":
            cur = model.typed(args[0], "zset")
            cur = cur if cur is not None else {}
            cur[args[2].encode()] = cur.get(args[2].encode(), 0.0) + args[1]
            d[args[0]] = ("zset", cur)
            check(cur[args[2].encode()])
        elif name == "zscore":
            check((model.typed(args[0], "zset") or {}).get(args[1].encode()))
        elif name == "zrange":
            cur = model.typed(args[0], "zset") or {}
            want = sorted(cur.items(), key=lambda kv: (kv[1], kv[0]))
            if got != want and norm_pairs(got) != want:
                raise Mismatch(f"zrange{args}: got {got!r}, want {want!r}")
        elif name == "zcard":
            check(len(model.typed(args[0], "zset") or {}))
        elif name == "zrem":
            cur = model.typed(args[0], "zset") or {}
            check(int(cur.pop(args[1].encode(), None) is not None))
            model.drop_if_empty(args[0])
        elif name == "zpopmin":
            count = args[1]
            cur = model.typed(args[0], "zset") or {}
            order = sorted(cur.items(), key=lambda kv: (kv[1], kv[0]))
            taken = order[: (1 if count is None else count)]
            for m, _ in taken:
                del cur[m]
            model.drop_if_empty(args[0])
            if norm_pairs(got) != taken:
                raise Mismatch(f"zpopmin{args}: got {got!r}, want {taken!r}")
        elif name == "dbsize":
            check(len(d))
        else:
            raise Mismatch(f"no model for {name}")
    except ValueError as e:
        if str(e) != WRONGTYPE:
            raise
        wrongtype()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    binary = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 400
    port = free_port()
    server = subprocess.Popen([binary, "--port", str(port), "--shards", "2"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        first = server.stdout.readline().decode()
        assert first.startswith("listening on"), first
        commands = 0
        for label, client in [
            ("defaults (RESP3)", redis.Redis(port=port, socket_timeout=60)),
            ("protocol=2", redis.Redis(port=port, protocol=2, socket_timeout=60)),
        ]:
            hello = client.execute_command("HELLO")
            if isinstance(hello, list):  # RESP2 has no maps: a flat list
                hello = dict(zip(hello[::2], hello[1::2]))
            proto = hello.get(b"proto", hello.get("proto"))
            assert proto == (2 if "protocol=2" in label else 3), hello
            client.flushall()
            model = Model()
            rng = random.Random(7)
            for _ in range(rounds):
                ops = [random_op(rng) for _ in range(rng.randint(1, 16))]
                # One pipeline in four is a MULTI/EXEC transaction: the same replies.
                pipe = client.pipeline(transaction=rng.random() < 0.25)
                for name, args in ops:
                    call(pipe, name, args)
                results = pipe.execute(raise_on_error=False)
                for (name, args), got in zip(ops, results):
                    expect(model, name, args, got)
                commands += len(ops)
            print(f"redis-py {redis.__version__}, {label}: model agrees")
        print(f"redis-py: {commands} commands checked")
    except Mismatch as e:
        print(f"redis-py: MISMATCH {e}")
        sys.exit(1)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
