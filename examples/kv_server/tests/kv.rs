//! The keyspace and its commands: Redis's replies byte for byte (errors and shapes),
//! expiry on a fake clock, a model check (proptest), and sharded routing that must
//! answer exactly like one shard.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kv_server::kv::{After, Command, Info, Key, Route, Session, Store};
use kv_server::resp::{Decoder, Limits, Protocol, Reply};
use proptest::prelude::*;

/// Serves a byte stream the way `kv_server` does, on one store at time `now`: every
/// request answered in order; a protocol error answered, then the stream is closed;
/// `QUIT` answered, then closed.
fn serve(store: &mut Store, input: &[u8], now: Instant) -> Vec<u8> {
    let mut decoder = Decoder::new(Limits::default());
    decoder.extend(input);
    let mut out = Vec::new();
    loop {
        match decoder.next_request() {
            Ok(Some(args)) => {
                let (reply, quit) = match Command::parse_args(args) {
                    Ok(cmd) => {
                        let quit = cmd.is_quit();
                        (store.execute(cmd, now), quit)
                    }
                    Err(reply) => (reply, false),
                };
                reply.encode(&mut out);
                if quit {
                    return out;
                }
            }
            Ok(None) => return out,
            Err(e) => {
                out.extend_from_slice(&e.to_resp());
                return out;
            }
        }
    }
}

/// Runs inline commands (one per line) on `store` and returns the replies as text.
fn transcript(store: &mut Store, lines: &str, now: Instant) -> String {
    let input: String = lines.lines().map(|l| format!("{}\r\n", l.trim())).collect();
    String::from_utf8_lossy(&serve(store, input.as_bytes(), now)).into_owned()
}

/// Asserts that each command (alone on a fresh store after `setup`) gets the reply.
fn assert_replies(setup: &str, cases: &[(&str, &str)]) {
    let now = Instant::now();
    for (command, expected) in cases {
        let mut store = Store::new();
        transcript(&mut store, setup, now);
        assert_eq!(
            transcript(&mut store, command, now),
            *expected,
            "command {command:?}"
        );
    }
}

#[test]
fn argument_errors_are_redis_words_byte_for_byte() {
    let long = "a".repeat(200);
    let unknown_long = format!("foo {long} b");
    let unknown_long_reply = format!(
        "-ERR unknown command 'foo', with args beginning with: '{}' \r\n",
        "a".repeat(128)
    );
    let cases: &[(&str, &str)] = &[
        (
            "GET",
            "-ERR wrong number of arguments for 'get' command\r\n",
        ),
        (
            "get a b",
            "-ERR wrong number of arguments for 'get' command\r\n",
        ),
        (
            "SET k",
            "-ERR wrong number of arguments for 'set' command\r\n",
        ),
        (
            "DEL",
            "-ERR wrong number of arguments for 'del' command\r\n",
        ),
        (
            "MSET a 1 b",
            "-ERR wrong number of arguments for 'mset' command\r\n",
        ),
        (
            "PING a b",
            "-ERR wrong number of arguments for 'ping' command\r\n",
        ),
        (
            "DBSIZE x",
            "-ERR wrong number of arguments for 'dbsize' command\r\n",
        ),
        (
            "INCRBY k",
            "-ERR wrong number of arguments for 'incrby' command\r\n",
        ),
        (
            "COMMAND COUNT x",
            "-ERR wrong number of arguments for 'command|count' command\r\n",
        ),
        (
            "CONFIG GET",
            "-ERR wrong number of arguments for 'config|get' command\r\n",
        ),
        (
            "FOO a b",
            "-ERR unknown command 'FOO', with args beginning with: 'a' 'b' \r\n",
        ),
        (
            "foo",
            "-ERR unknown command 'foo', with args beginning with: \r\n",
        ),
        (&unknown_long, &unknown_long_reply),
        ("INCR s", "-ERR value is not an integer or out of range\r\n"),
        (
            "INCRBY n x",
            "-ERR value is not an integer or out of range\r\n",
        ),
        (
            "INCRBY n 1.5",
            "-ERR value is not an integer or out of range\r\n",
        ),
        (
            "INCRBY n 99999999999999999999",
            "-ERR value is not an integer or out of range\r\n",
        ),
        ("INCR big", "-ERR increment or decrement would overflow\r\n"),
        (
            "DECR small",
            "-ERR increment or decrement would overflow\r\n",
        ),
        (
            "DECRBY n -9223372036854775808",
            "-ERR decrement would overflow\r\n",
        ),
        (
            "INCR huge",
            "-ERR value is not an integer or out of range\r\n",
        ),
        (
            "SET k v EX 0",
            "-ERR invalid expire time in 'set' command\r\n",
        ),
        (
            "SET k v PX -5",
            "-ERR invalid expire time in 'set' command\r\n",
        ),
        (
            "SET k v EX 9223372036854775807",
            "-ERR invalid expire time in 'set' command\r\n",
        ),
        (
            "SET k v EX ten",
            "-ERR value is not an integer or out of range\r\n",
        ),
        ("SET k v EX", "-ERR syntax error\r\n"),
        ("SET k v NX XX", "-ERR syntax error\r\n"),
        ("SET k v EX 1 PX 1", "-ERR syntax error\r\n"),
        ("SET k v KEEPTTL EX 1", "-ERR syntax error\r\n"),
        ("SET k v FOO", "-ERR syntax error\r\n"),
        ("SET k v FOO EX ten", "-ERR syntax error\r\n"),
        (
            "EXPIRE k ten",
            "-ERR value is not an integer or out of range\r\n",
        ),
        (
            "EXPIRE k 9223372036854775807",
            "-ERR invalid expire time in 'expire' command\r\n",
        ),
        ("EXPIRE k 10 FOO", "-ERR Unsupported option FOO\r\n"),
        (
            "EXPIRE k 10 NX XX",
            "-ERR NX and XX, GT or LT options at the same time are not compatible\r\n",
        ),
        (
            "EXPIRE k 10 GT LT",
            "-ERR GT and LT options at the same time are not compatible\r\n",
        ),
        ("FLUSHALL NOW", "-ERR syntax error\r\n"),
        (
            "COMMAND FOO",
            "-ERR unknown subcommand 'FOO'. Try COMMAND HELP.\r\n",
        ),
        (
            "CONFIG SET a b",
            "-ERR unknown subcommand 'SET'. Try CONFIG HELP.\r\n",
        ),
        (
            "CLIENT KILL x",
            "-ERR unknown subcommand 'KILL'. Try CLIENT HELP.\r\n",
        ),
        ("SELECT 1", "-ERR DB index is out of range\r\n"),
        (
            "SELECT x",
            "-ERR value is not an integer or out of range\r\n",
        ),
    ];
    assert_replies(
        "SET s abc\nSET big 9223372036854775807\nSET small -9223372036854775808\nSET huge 99999999999999999999",
        cases,
    );
}

#[test]
fn reply_shapes_match_redis() {
    let cases: &[(&str, &str)] = &[
        ("PING", "+PONG\r\n"),
        ("ping hello", "$5\r\nhello\r\n"),
        ("ECHO \"a b\"", "$3\r\na b\r\n"),
        ("GET a", "$1\r\n1\r\n"),
        ("GET missing", "$-1\r\n"),
        ("SET a x NX", "$-1\r\n"),
        ("SET missing x XX", "$-1\r\n"),
        ("SET missing x NX", "+OK\r\n"),
        ("SET a x XX", "+OK\r\n"),
        ("DEL a a missing b", ":2\r\n"),
        ("EXISTS a a missing", ":2\r\n"),
        ("MGET a missing b", "*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n"),
        ("MSET a 9 c 3", "+OK\r\n"),
        ("INCR a", ":2\r\n"),
        ("DECR new", ":-1\r\n"),
        ("INCRBY a -11", ":-10\r\n"),
        ("DECRBY a 11", ":-10\r\n"),
        ("TTL missing", ":-2\r\n"),
        ("TTL a", ":-1\r\n"),
        ("PTTL a", ":-1\r\n"),
        ("TTL t", ":100\r\n"),
        ("PTTL t", ":100000\r\n"),
        ("EXPIRE missing 10", ":0\r\n"),
        ("EXPIRE a 10", ":1\r\n"),
        ("DBSIZE", ":3\r\n"),
        ("FLUSHALL", "+OK\r\n"),
        ("FLUSHALL ASYNC", "+OK\r\n"),
        ("COMMAND COUNT", ":79\r\n"),
        ("COMMAND DOCS", "*0\r\n"),
        ("COMMAND DOCS get", "*0\r\n"),
        (
            "COMMAND INFO get nosuch",
            "*2\r\n*6\r\n$3\r\nget\r\n:2\r\n*0\r\n:1\r\n:1\r\n:1\r\n$-1\r\n",
        ),
        ("CONFIG GET save", "*2\r\n$4\r\nsave\r\n$0\r\n\r\n"),
        (
            "CONFIG GET appendonly nosuch",
            "*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n",
        ),
        ("CLIENT SETNAME me", "+OK\r\n"),
        ("CLIENT SETINFO LIB-NAME redis-rs", "+OK\r\n"),
        ("SELECT 0", "+OK\r\n"),
        ("QUIT", "+OK\r\n"),
    ];
    assert_replies("SET a 1\nSET b 2\nSET t v EX 100", cases);
}

#[test]
fn whole_sessions_in_one_pipeline() {
    let now = Instant::now();
    let mut store = Store::new();
    // Redis's own replies for this session, pipelined in one read.
    let session = "SET k 10\nINCR k\nEXPIRE k 0\nEXISTS k\nDBSIZE\nQUIT\nPING";
    assert_eq!(
        transcript(&mut store, session, now),
        "+OK\r\n:11\r\n:1\r\n:0\r\n:0\r\n+OK\r\n"
    );
    // A protocol error ends the stream after the replies before it.
    let mut input = b"PING\r\n*1\r\n$1\r\nx\r\n*1\r\nJUNK\r\n".to_vec();
    input.extend_from_slice(b"PING\r\n");
    assert_eq!(
        serve(&mut store, &input, now),
        b"+PONG\r\n-ERR unknown command 'x', with args beginning with: \r\n-ERR Protocol error: expected '$', got 'J'\r\n"
    );
    // Binary junk that reads as an inline command is an unknown command, not a close.
    assert_eq!(
        serve(&mut store, b"\x01\x02\xff\r\nPING\r\n", now),
        "-ERR unknown command '\u{1}\u{2}\u{fffd}', with args beginning with: \r\n+PONG\r\n"
            .as_bytes()
    );
}

#[test]
fn command_lists_every_command_redis_cli_can_read() {
    let mut store = Store::new();
    let Reply::Array(entries) = store.execute(
        Command::parse(vec![b"COMMAND".to_vec()]).unwrap(),
        Instant::now(),
    ) else {
        panic!("COMMAND is an array");
    };
    assert_eq!(entries.len(), 79);
    for entry in entries {
        // redis-cli (before 7) reads name, arity, flags, first key as these types.
        let Reply::Array(fields) = entry else {
            panic!("an entry is an array")
        };
        assert!(matches!(
            fields.as_slice(),
            [
                Reply::Bulk(_),
                Reply::Integer(_),
                Reply::Array(_),
                Reply::Integer(_),
                Reply::Integer(_),
                Reply::Integer(_)
            ]
        ));
    }
}

#[test]
fn info_reports_keyspace_and_server_fields() {
    let now = Instant::now();
    let mut store = Store::new();
    transcript(&mut store, "SET a 1\nSET b 2 EX 10", now);
    let Reply::Bulk(text) = store.execute(Command::Info(Vec::new()), now) else {
        panic!("INFO is a bulk string");
    };
    let text = String::from_utf8(text).unwrap();
    assert!(text.starts_with("# Server\r\nredis_version:"), "{text}");
    assert!(
        text.contains("\r\n\r\n# Keyspace\r\ndb0:keys=2,expires=1,avg_ttl=0\r\n"),
        "{text}"
    );
    assert!(text.contains("shard0:keys=2,expires=1\r\n"), "{text}");
    // The server supplies its own fields; unknown sections give an empty string.
    let info = Info::new().field("Clients", "connected_clients", 3);
    assert_eq!(
        info.render(&[b"CLIENTS".to_vec()]),
        Reply::Bulk(b"# Clients\r\nconnected_clients:3\r\n".to_vec())
    );
    assert_eq!(info.render(&[b"nosuch".to_vec()]), Reply::Bulk(Vec::new()));
}

#[test]
fn keys_expire_on_a_fake_clock() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let mut s = Store::new();
    assert_eq!(
        transcript(
            &mut s,
            "SET a 1 PX 1500\nSET b 2 EX 100\nSET c 3\nSET d 4 EX 5",
            t0
        ),
        "+OK\r\n".repeat(4)
    );
    // TTL rounds to the nearest second, as Redis does.
    assert_eq!(
        transcript(&mut s, "TTL a\nPTTL a", at(0)),
        ":2\r\n:1500\r\n"
    );
    assert_eq!(transcript(&mut s, "TTL a", at(1000)), ":1\r\n");
    assert_eq!(
        transcript(&mut s, "GET a\nTTL a\nEXISTS a", at(1500)),
        "$-1\r\n:-2\r\n:0\r\n"
    );
    // SET without options clears the TTL; KEEPTTL keeps it; INCR keeps it.
    assert_eq!(
        transcript(&mut s, "SET b x KEEPTTL\nTTL b", at(0)),
        "+OK\r\n:100\r\n"
    );
    assert_eq!(
        transcript(&mut s, "SET b 7\nTTL b", at(0)),
        "+OK\r\n:-1\r\n"
    );
    assert_eq!(
        transcript(&mut s, "EXPIRE b 10\nINCR b\nTTL b", at(0)),
        ":1\r\n:8\r\n:10\r\n"
    );
    // EXPIRE's conditions.
    assert_eq!(
        transcript(&mut s, "EXPIRE c 10 XX\nEXPIRE c 10 NX\nEXPIRE c 20 NX\nEXPIRE c 5 GT\nEXPIRE c 20 GT\nEXPIRE c 30 LT\nEXPIRE c 15 LT\nTTL c", at(0)),
        ":0\r\n:1\r\n:0\r\n:0\r\n:1\r\n:0\r\n:1\r\n:15\r\n"
    );
    assert_eq!(
        transcript(
            &mut s,
            "SET p 1\nEXPIRE p 10 LT\nTTL p\nSET q 1\nEXPIRE q 10 GT",
            at(0)
        ),
        "+OK\r\n:1\r\n:10\r\n+OK\r\n:0\r\n"
    );
    // EXPIRE with a time in the past deletes.
    assert_eq!(
        transcript(&mut s, "EXPIRE p -1\nEXISTS p", at(0)),
        ":1\r\n:0\r\n"
    );
    // Keys nobody reads again are reclaimed by the active step.
    assert_eq!(s.len(), 4); // b, c, d, q; a is gone
    assert_eq!(s.expire_some(at(4_999), 100), 0);
    assert_eq!(s.expire_some(at(60_000), 100), 3);
    assert_eq!(transcript(&mut s, "DBSIZE", at(60_000)), ":1\r\n");
}

// ---- Model check ----

const KEYS: &[&str] = &["a", "b", "c", "d", "e", "f"];

fn key() -> impl Strategy<Value = String> {
    proptest::sample::select(KEYS).prop_map(str::to_string)
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(
            &[
                "0",
                "1",
                "-5",
                "x",
                "",
                "12a",
                "007",
                "9223372036854775807",
                "-9223372036854775808"
            ][..]
        )
        .prop_map(str::to_string),
        any::<i32>().prop_map(|n| n.to_string()),
    ]
}

#[derive(Clone, Debug)]
enum Op {
    Set(String, String, &'static str),
    Get(String),
    Del(Vec<String>),
    Exists(Vec<String>),
    Incr(String),
    IncrBy(String, i64),
    MSet(Vec<(String, String)>),
    MGet(Vec<String>),
    MSetNx(Vec<(String, String)>),
    Rename(String, String, bool),
    DbSize,
    FlushAll,
}

fn op() -> impl Strategy<Value = Op> {
    let keys = || proptest::collection::vec(key(), 1..5);
    prop_oneof![
        4 => (key(), value(), proptest::sample::select(&["", "NX", "XX"][..])).prop_map(|(k, v, c)| Op::Set(k, v, c)),
        3 => key().prop_map(Op::Get),
        2 => keys().prop_map(Op::Del),
        2 => keys().prop_map(Op::Exists),
        2 => key().prop_map(Op::Incr),
        2 => (key(), prop_oneof![-100i64..100, Just(i64::MAX), Just(i64::MIN)]).prop_map(|(k, n)| Op::IncrBy(k, n)),
        2 => proptest::collection::vec((key(), value()), 1..4).prop_map(Op::MSet),
        2 => keys().prop_map(Op::MGet),
        2 => proptest::collection::vec((key(), value()), 1..4).prop_map(Op::MSetNx),
        2 => (key(), key(), any::<bool>()).prop_map(|(a, b, nx)| Op::Rename(a, b, nx)),
        1 => Just(Op::DbSize),
        1 => Just(Op::FlushAll),
    ]
}

impl Op {
    fn args(&self) -> Vec<Vec<u8>> {
        let mut a: Vec<String> = match self {
            Op::Set(k, v, c) => vec!["SET".into(), k.clone(), v.clone(), c.to_string()],
            Op::Get(k) => vec!["GET".into(), k.clone()],
            Op::Del(ks) => [vec!["DEL".into()], ks.clone()].concat(),
            Op::Exists(ks) => [vec!["EXISTS".into()], ks.clone()].concat(),
            Op::Incr(k) => vec!["INCR".into(), k.clone()],
            Op::IncrBy(k, n) => vec!["INCRBY".into(), k.clone(), n.to_string()],
            Op::MSet(pairs) => std::iter::once("MSET".to_string())
                .chain(pairs.iter().flat_map(|(k, v)| [k.clone(), v.clone()]))
                .collect(),
            Op::MGet(ks) => [vec!["MGET".into()], ks.clone()].concat(),
            Op::MSetNx(pairs) => std::iter::once("MSETNX".to_string())
                .chain(pairs.iter().flat_map(|(k, v)| [k.clone(), v.clone()]))
                .collect(),
            Op::Rename(a, b, nx) => {
                let name = if *nx { "RENAMENX" } else { "RENAME" };
                vec![name.into(), a.clone(), b.clone()]
            }
            Op::DbSize => vec!["DBSIZE".into()],
            Op::FlushAll => vec!["FLUSHALL".into()],
        };
        if a.last().is_some_and(String::is_empty) && matches!(self, Op::Set(..)) {
            a.pop(); // no condition
        }
        a.into_iter().map(String::into_bytes).collect()
    }

    /// What Redis answers, computed on a plain map.
    fn model(&self, m: &mut HashMap<String, String>) -> Reply {
        let bulk =
            |v: Option<&String>| v.map_or(Reply::Nil, |v| Reply::Bulk(v.clone().into_bytes()));
        match self {
            Op::Set(k, v, c) => {
                let exists = m.contains_key(k);
                if (*c == "NX" && exists) || (*c == "XX" && !exists) {
                    return Reply::Nil;
                }
                m.insert(k.clone(), v.clone());
                Reply::ok()
            }
            Op::Get(k) => bulk(m.get(k)),
            Op::Del(ks) => {
                Reply::Integer(ks.iter().filter(|k| m.remove(*k).is_some()).count() as i64)
            }
            Op::Exists(ks) => {
                Reply::Integer(ks.iter().filter(|k| m.contains_key(*k)).count() as i64)
            }
            Op::Incr(k) => Op::IncrBy(k.clone(), 1).model(m),
            Op::IncrBy(k, by) => {
                let current = match m.get(k) {
                    None => 0,
                    // Redis's rule: canonical decimal only ("007", "" are not integers).
                    Some(v) => match v.parse::<i64>() {
                        Ok(n) if n.to_string() == *v => n,
                        _ => return Reply::error("ERR value is not an integer or out of range"),
                    },
                };
                match current.checked_add(*by) {
                    Some(n) => {
                        m.insert(k.clone(), n.to_string());
                        Reply::Integer(n)
                    }
                    None => Reply::error("ERR increment or decrement would overflow"),
                }
            }
            Op::MSet(pairs) => {
                for (k, v) in pairs {
                    m.insert(k.clone(), v.clone());
                }
                Reply::ok()
            }
            Op::MGet(ks) => Reply::Array(ks.iter().map(|k| bulk(m.get(k))).collect()),
            Op::MSetNx(pairs) => {
                if pairs.iter().any(|(k, _)| m.contains_key(k)) {
                    return Reply::Integer(0);
                }
                for (k, v) in pairs {
                    m.insert(k.clone(), v.clone());
                }
                Reply::Integer(1)
            }
            Op::Rename(a, b, nx) => {
                if !m.contains_key(a) {
                    return Reply::error("ERR no such key");
                }
                if *nx && m.contains_key(b) {
                    return Reply::Integer(0);
                }
                let v = m.remove(a).expect("checked above");
                m.insert(b.clone(), v);
                if *nx {
                    Reply::Integer(1)
                } else {
                    Reply::ok()
                }
            }
            Op::DbSize => Reply::Integer(m.len() as i64),
            Op::FlushAll => {
                m.clear();
                Reply::ok()
            }
        }
    }
}

/// How the fake sharded server picks a key's shard.
fn shard_of(key: &[u8]) -> usize {
    key.iter().map(|&b| b as usize).sum::<usize>() % 4
}

/// Runs `cmd` on four stores as `kv_server` will: route, run the parts on their shards,
/// merge. Also checks that every part only touches keys of its own shard, and that
/// `single_key` (which routing asks) agrees with `keys`.
fn run_sharded(stores: &mut [Store], cmd: Command, now: Instant) -> Reply {
    let keys = cmd.keys();
    assert_eq!(
        cmd.single_key(),
        (keys.len() == 1).then(|| keys[0]),
        "{cmd:?}"
    );
    match cmd.route(stores.len(), shard_of) {
        Route::Atomic(atomic) => futures_util::FutureExt::now_or_never(
            atomic.run(now, |i, step| std::future::ready(step(&mut stores[i]))),
        )
        .expect("steps on local stores finish at once"),
        Route::Local(cmd) => {
            assert!(cmd.keys().is_empty(), "{cmd:?} routed locally");
            stores[0].execute(cmd, now)
        }
        Route::Shard(i, cmd) => {
            assert!(
                cmd.keys().iter().all(|k| shard_of(k) == i),
                "{cmd:?} to {i}"
            );
            stores[i].execute(cmd, now)
        }
        Route::Split(split) => {
            let mut seen = Vec::new();
            let replies = split
                .parts
                .into_iter()
                .map(|(i, cmd)| {
                    assert!(!seen.contains(&i), "two parts for shard {i}");
                    seen.push(i);
                    assert!(
                        cmd.keys().iter().all(|k| shard_of(k) == i),
                        "{cmd:?} to {i}"
                    );
                    stores[i].execute(cmd, now)
                })
                .collect();
            split.merge.merge(replies)
        }
        Route::Info(sections) => {
            let stats: Vec<_> = stores.iter().map(Store::stats).collect();
            Info::new().shards(&stats).render(&sections)
        }
    }
}

proptest! {
    #[test]
    fn commands_agree_with_a_model(ops in proptest::collection::vec(op(), 1..60)) {
        let now = Instant::now();
        let mut store = Store::new();
        let mut model = HashMap::new();
        for op in &ops {
            let cmd = Command::parse(op.args()).expect("valid command");
            let expected = op.model(&mut model);
            prop_assert_eq!(store.execute(cmd, now), expected, "{:?}", op);
        }
        prop_assert_eq!(store.len(), model.len());
    }

    #[test]
    fn four_shards_answer_like_one(
        ops in proptest::collection::vec(
            prop_oneof![
                6 => op().prop_map(|o| o.args()),
                1 => (key(), 0i64..4).prop_map(|(k, s)| vec![b"EXPIRE".to_vec(), k.into_bytes(), s.to_string().into_bytes()]),
                1 => key().prop_map(|k| vec![b"TTL".to_vec(), k.into_bytes()]),
                1 => Just(vec![b"PING".to_vec()]),
                1 => Just(vec![b"TICK".to_vec()]),
                // Collections, so that RENAME moves them across shards and types clash.
                1 => (key(), key()).prop_map(|(k, m)| vec![b"RPUSH".to_vec(), k.into_bytes(), m.into_bytes()]),
                1 => (key(), key()).prop_map(|(k, m)| vec![b"SADD".to_vec(), k.into_bytes(), m.into_bytes()]),
                1 => key().prop_map(|k| vec![b"LRANGE".to_vec(), k.into_bytes(), b"0".to_vec(), b"-1".to_vec()]),
                1 => key().prop_map(|k| vec![b"TYPE".to_vec(), k.into_bytes()]),
            ],
            1..80,
        ),
    ) {
        let mut now = Instant::now();
        let mut one = Store::new();
        let mut four: Vec<Store> = (0..4).map(|_| Store::new()).collect();
        for args in ops {
            if args[0] == b"TICK" {
                now += Duration::from_millis(1500);
                continue;
            }
            let cmd = Command::parse(args).expect("valid command");
            let single = one.execute(cmd.clone(), now);
            let sharded = run_sharded(&mut four, cmd.clone(), now);
            prop_assert_eq!(sharded, single, "{:?}", cmd);
        }
        // Same contents in the end.
        let all: Vec<Key> = KEYS.iter().map(|k| k.as_bytes().into()).collect();
        prop_assert_eq!(
            run_sharded(&mut four, Command::MGet(all.clone()), now),
            one.execute(Command::MGet(all), now)
        );
        prop_assert_eq!(
            run_sharded(&mut four, Command::DbSize, now),
            one.execute(Command::DbSize, now)
        );
    }
}

#[test]
fn split_commands_merge_in_the_original_key_order() {
    let now = Instant::now();
    let mut four: Vec<Store> = (0..4).map(|_| Store::new()).collect();
    let keys: Vec<Key> = (0..20)
        .map(|i| format!("key{i}").as_bytes().into())
        .collect();
    let pairs: Vec<(Key, Vec<u8>)> = keys
        .iter()
        .map(|k| (k.clone(), [&b"v-"[..], k].concat()))
        .collect();
    let Route::Split(split) = Command::MSet(pairs.clone()).route(4, shard_of) else {
        panic!("20 keys over 4 shards split");
    };
    assert!(split.parts.len() > 1);
    let replies = split
        .parts
        .into_iter()
        .map(|(i, c)| four[i].execute(c, now))
        .collect();
    assert_eq!(split.merge.merge(replies), Reply::ok());
    // Every shard holds only its keys, and all of them are there.
    for (i, store) in four.iter_mut().enumerate() {
        for k in &keys {
            assert_eq!(store.get(k, now).is_some(), shard_of(k) == i);
        }
    }
    let mut reversed = keys.clone();
    reversed.reverse();
    reversed.push(b"missing"[..].into());
    let expected = Reply::Array(
        reversed
            .iter()
            .map(|k| match pairs.iter().find(|(pk, _)| pk == k) {
                Some((_, v)) => Reply::Bulk(v.clone()),
                None => Reply::Nil,
            })
            .collect(),
    );
    assert_eq!(
        run_sharded(&mut four, Command::MGet(reversed.clone()), now),
        expected
    );
    assert_eq!(
        run_sharded(&mut four, Command::Exists(reversed.clone()), now),
        Reply::Integer(20)
    );
    assert_eq!(
        run_sharded(&mut four, Command::Del(reversed), now),
        Reply::Integer(20)
    );
    assert_eq!(
        run_sharded(&mut four, Command::DbSize, now),
        Reply::Integer(0)
    );
}

#[test]
fn merging_passes_a_shard_error_through() {
    let Route::Split(split) =
        Command::Del(vec![b"a"[..].into(), b"b"[..].into()]).route(2, |k| (k[0] - b'a') as usize)
    else {
        panic!("two shards");
    };
    let err = Reply::error("ERR shard unavailable");
    assert_eq!(split.merge.merge(vec![Reply::Integer(1), err.clone()]), err);
}

#[test]
fn execute_into_writes_what_execute_replies() {
    let now = Instant::now();
    let (mut a, mut b) = (Store::new(), Store::new());
    let script = "SET k v EX 10\nGET k\nGET nope\nMGET k nope k\nINCR n\nTTL k\nDEL k\nMGET k\n\
                  LPUSH l a\nGET l\nMGET l k\nHSET h f 1\nHGETALL h\nZADD z 1.5 m\nZSCORE z m";
    for proto in [Protocol::Resp2, Protocol::Resp3] {
        for line in script.lines() {
            let args: Vec<Vec<u8>> = line.split(' ').map(|s| s.as_bytes().to_vec()).collect();
            let cmd = Command::parse(args).unwrap();
            let mut direct = Vec::new();
            a.execute_into(cmd.clone(), now, proto, &mut direct);
            let mut via_reply = Vec::new();
            b.execute(cmd, now).encode_as(&mut via_reply, proto);
            assert_eq!(direct, via_reply, "{line} ({proto:?})");
        }
    }
}

/// Like `transcript`, with each reply written in `proto`.
fn transcript_in(store: &mut Store, lines: &str, proto: Protocol) -> String {
    let now = Instant::now();
    let mut out = Vec::new();
    for line in lines.lines() {
        let args: Vec<Vec<u8>> = line
            .split_whitespace()
            .map(|a| a.as_bytes().to_vec())
            .collect();
        let reply = match Command::parse(args) {
            Ok(cmd) => store.execute(cmd, now),
            Err(reply) => reply,
        };
        reply.encode_as(&mut out, proto);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn strings_beyond_get_and_set_answer_as_redis() {
    let cases: &[(&str, &str)] = &[
        ("APPEND s xyz", ":6\r\n"),
        ("APPEND new xyz", ":3\r\n"),
        ("STRLEN s", ":3\r\n"),
        ("STRLEN missing", ":0\r\n"),
        ("SETNX s other", ":0\r\n"),
        ("SETNX new v", ":1\r\n"),
        ("GETDEL s", "$3\r\nabc\r\n"),
        ("GETDEL missing", "$-1\r\n"),
        ("GETEX s", "$3\r\nabc\r\n"),
        ("GETEX s EX 10", "$3\r\nabc\r\n"),
        ("GETEX s PERSIST", "$3\r\nabc\r\n"),
        (
            "GETEX s EX 0",
            "-ERR invalid expire time in 'getex' command\r\n",
        ),
        ("GETEX s FOO 1", "-ERR syntax error\r\n"),
        ("SET s new GET", "$3\r\nabc\r\n"),
        ("SET missing new GET", "$-1\r\n"),
        ("SET s new NX GET", "$3\r\nabc\r\n"),
        (
            "SET l new GET",
            "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
        ),
        ("SET s v EX 1 EX 2", "+OK\r\n"),
        ("SET s v EX 1 PX 2", "-ERR syntax error\r\n"),
        ("SET s v EXAT 99999999999", "+OK\r\n"),
        (
            "SET s v PXAT 0",
            "-ERR invalid expire time in 'set' command\r\n",
        ),
        (
            "GET l",
            "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
        ),
        (
            "INCR l",
            "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
        ),
        (
            "APPEND l x",
            "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
        ),
        ("MGET s l missing", "*3\r\n$3\r\nabc\r\n$-1\r\n$-1\r\n"),
        ("SET l now-a-string", "+OK\r\n"),
        ("TYPE s", "+string\r\n"),
        ("TYPE l", "+list\r\n"),
        ("TYPE missing", "+none\r\n"),
        ("PERSIST s", ":0\r\n"),
        ("PERSIST t", ":1\r\n"),
        ("PEXPIRE s 5000", ":1\r\n"),
        ("EXPIREAT s 99999999999", ":1\r\n"),
        ("PEXPIREAT s 1", ":1\r\n"),
        ("UNLINK s l missing", ":2\r\n"),
    ];
    assert_replies("SET s abc\nRPUSH l a\nSET t v EX 100", cases);
}

#[test]
fn lists_answer_as_redis() {
    let cases: &[(&str, &str)] = &[
        ("LPUSH l x y", ":5\r\n"),
        ("RPUSH l x", ":4\r\n"),
        ("LRANGE l 0 -1", "*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n"),
        ("LRANGE l -2 100", "*2\r\n$1\r\nb\r\n$1\r\nc\r\n"),
        ("LRANGE l 5 10", "*0\r\n"),
        ("LRANGE missing 0 -1", "*0\r\n"),
        ("LPOP l", "$1\r\na\r\n"),
        ("RPOP l", "$1\r\nc\r\n"),
        ("LPOP l 2", "*2\r\n$1\r\na\r\n$1\r\nb\r\n"),
        ("LPOP l 0", "*0\r\n"),
        (
            "LPOP l -1",
            "-ERR value is out of range, must be positive\r\n",
        ),
        ("LPOP missing", "$-1\r\n"),
        ("LPOP missing 2", "*-1\r\n"),
        ("LLEN l", ":3\r\n"),
        ("LLEN missing", ":0\r\n"),
        ("LINDEX l 1", "$1\r\nb\r\n"),
        ("LINDEX l -1", "$1\r\nc\r\n"),
        ("LINDEX l 3", "$-1\r\n"),
        (
            "LINDEX l x",
            "-ERR value is not an integer or out of range\r\n",
        ),
        (
            "LPUSH s x",
            "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
        ),
        (
            "LPUSH l",
            "-ERR wrong number of arguments for 'lpush' command\r\n",
        ),
    ];
    assert_replies("RPUSH l a b c\nSET s v", cases);
    // A list that becomes empty is deleted.
    let mut store = Store::new();
    assert_eq!(
        transcript(
            &mut store,
            "RPUSH l a\nRPOP l\nEXISTS l\nTYPE l",
            Instant::now()
        ),
        ":1\r\n$1\r\na\r\n:0\r\n+none\r\n"
    );
}

#[test]
fn hashes_answer_as_redis() {
    let cases: &[(&str, &str)] = &[
        ("HSET h f 2 g 3", ":1\r\n"),
        (
            "HSET h f",
            "-ERR wrong number of arguments for 'hset' command\r\n",
        ),
        ("HMSET h a b", "+OK\r\n"),
        ("HGET h f", "$1\r\n1\r\n"),
        ("HGET h nope", "$-1\r\n"),
        ("HGET missing f", "$-1\r\n"),
        ("HMGET h f nope", "*2\r\n$1\r\n1\r\n$-1\r\n"),
        ("HDEL h f nope", ":1\r\n"),
        ("HGETALL h", "*2\r\n$1\r\nf\r\n$1\r\n1\r\n"),
        ("HGETALL missing", "*0\r\n"),
        ("HKEYS h", "*1\r\n$1\r\nf\r\n"),
        ("HVALS h", "*1\r\n$1\r\n1\r\n"),
        ("HLEN h", ":1\r\n"),
        ("HEXISTS h f", ":1\r\n"),
        ("HEXISTS h g", ":0\r\n"),
        ("HINCRBY h f 41", ":42\r\n"),
        ("HINCRBY h new -1", ":-1\r\n"),
        ("HINCRBY t s 1", "-ERR hash value is not an integer\r\n"),
        (
            "HINCRBY h f x",
            "-ERR value is not an integer or out of range\r\n",
        ),
        ("HINCRBY missing f 1", ":1\r\n"),
        (
            "HGET s f",
            "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
        ),
    ];
    assert_replies("HSET h f 1\nSET s v\nHSET t s text", cases);
}

#[test]
fn sets_answer_as_redis() {
    let cases: &[(&str, &str)] = &[
        ("SADD s a d", ":1\r\n"),
        ("SREM s a nope", ":1\r\n"),
        ("SREM missing a", ":0\r\n"),
        ("SCARD s", ":3\r\n"),
        ("SCARD missing", ":0\r\n"),
        ("SISMEMBER s b", ":1\r\n"),
        ("SISMEMBER s z", ":0\r\n"),
        ("SMEMBERS missing", "*0\r\n"),
        ("SPOP missing", "$-1\r\n"),
        ("SPOP missing 3", "*0\r\n"),
        (
            "SPOP s -1",
            "-ERR value is out of range, must be positive\r\n",
        ),
        ("SPOP s 1 2", "-ERR syntax error\r\n"),
        (
            "SADD str a",
            "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
        ),
    ];
    assert_replies("SADD s a b c\nSET str v", cases);
    // Whatever SPOP takes was a member, and goes; popping everything deletes the key.
    let mut store = Store::new();
    let now = Instant::now();
    transcript(&mut store, "SADD s a b c", now);
    let popped = transcript(&mut store, "SPOP s 5", now);
    for member in ["a", "b", "c"] {
        assert!(popped.contains(&format!("$1\r\n{member}\r\n")), "{popped}");
    }
    assert_eq!(transcript(&mut store, "EXISTS s", now), ":0\r\n");
}

#[test]
fn sorted_sets_answer_as_redis() {
    let cases: &[(&str, &str)] = &[
        ("ZADD z 3 c", ":1\r\n"),
        ("ZADD z 5 a", ":0\r\n"),
        ("ZADD z CH 5 a 4 d", ":2\r\n"),
        ("ZADD z NX 9 a", ":0\r\n"),
        ("ZADD z XX 9 new", ":0\r\n"),
        ("ZADD z GT 0 a", ":0\r\n"),
        ("ZADD z INCR 2 a", "$3\r\n3.5\r\n"),
        ("ZADD z NX INCR 2 a", "$-1\r\n"),
        (
            "ZADD z INCR 1 a 2 b",
            "-ERR INCR option supports a single increment-element pair\r\n",
        ),
        (
            "ZADD z NX XX 1 a",
            "-ERR XX and NX options at the same time are not compatible\r\n",
        ),
        (
            "ZADD z GT LT 1 a",
            "-ERR GT, LT, and/or NX options at the same time are not compatible\r\n",
        ),
        ("ZADD z x a", "-ERR value is not a valid float\r\n"),
        (
            "ZADD z 1",
            "-ERR wrong number of arguments for 'zadd' command\r\n",
        ),
        ("ZADD z 1 a 2", "-ERR syntax error\r\n"),
        ("ZINCRBY z 1 b", "$1\r\n3\r\n"),
        ("ZSCORE z a", "$3\r\n1.5\r\n"),
        ("ZSCORE z nope", "$-1\r\n"),
        ("ZCARD z", ":2\r\n"),
        ("ZRANGE z 0 -1", "*2\r\n$1\r\na\r\n$1\r\nb\r\n"),
        (
            "ZRANGE z 0 -1 WITHSCORES",
            "*4\r\n$1\r\na\r\n$3\r\n1.5\r\n$1\r\nb\r\n$1\r\n2\r\n",
        ),
        ("ZRANGE z 0 0 REV", "*1\r\n$1\r\nb\r\n"),
        ("ZRANGE z 0 -1 BYLEX", "-ERR syntax error\r\n"),
        ("ZRANGE z (1.5 +inf BYSCORE", "*1\r\n$1\r\nb\r\n"),
        ("ZPOPMIN z", "*2\r\n$1\r\na\r\n$3\r\n1.5\r\n"),
        (
            "ZPOPMIN z 5",
            "*4\r\n$1\r\na\r\n$3\r\n1.5\r\n$1\r\nb\r\n$1\r\n2\r\n",
        ),
        ("ZPOPMAX z", "*2\r\n$1\r\nb\r\n$1\r\n2\r\n"),
        ("ZPOPMIN missing", "*0\r\n"),
        ("ZREM z a nope", ":1\r\n"),
        ("ZADD z inf top", ":1\r\n"),
        (
            "ZADD s 1 a",
            "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
        ),
    ];
    assert_replies("ZADD z 1.5 a 2 b\nSET s v", cases);
}

#[test]
fn keys_and_scan_walk_every_key_once() {
    let mut store = Store::new();
    let now = Instant::now();
    let setup: String = (0..50).map(|i| format!("SET key:{i} v\n")).collect();
    transcript(&mut store, &setup, now);
    transcript(&mut store, "RPUSH list:1 a\nSET other v", now);
    let keys = transcript(&mut store, "KEYS key:*", now);
    assert!(keys.starts_with("*50\r\n"), "{keys}");
    assert!(transcript(&mut store, "KEYS *", now).starts_with("*52\r\n"));
    assert_eq!(
        transcript(&mut store, "KEYS list:?", now),
        "*1\r\n$6\r\nlist:1\r\n"
    );
    // A full SCAN walk with a small COUNT sees every key exactly once here (no key
    // moves while nothing is deleted), and TYPE filters.
    let mut seen = Vec::new();
    let mut cursor = 0u64;
    loop {
        let reply = store.execute(
            Command::parse(
                format!("SCAN {cursor} MATCH key:* COUNT 7")
                    .split(' ')
                    .map(|a| a.as_bytes().to_vec())
                    .collect(),
            )
            .unwrap(),
            now,
        );
        let Reply::Array(parts) = reply else { panic!() };
        let Reply::Bulk(next) = &parts[0] else {
            panic!()
        };
        let Reply::Array(keys) = &parts[1] else {
            panic!()
        };
        seen.extend(keys.iter().cloned());
        cursor = String::from_utf8_lossy(next).parse().unwrap();
        if cursor == 0 {
            break;
        }
    }
    assert_eq!(seen.len(), 50);
    assert_eq!(
        transcript(&mut store, "SCAN 0 COUNT 1000 TYPE list", now),
        "*2\r\n$1\r\n0\r\n*1\r\n$6\r\nlist:1\r\n"
    );
    assert_eq!(
        transcript(&mut store, "SCAN x", now),
        "-ERR invalid cursor\r\n"
    );
}

#[test]
fn resp3_replies_take_resp3_shapes() {
    let mut store = Store::new();
    let setup = "HSET h f v\nSADD s m\nZADD z 1.5 a 2 b\nSET k v";
    transcript_in(&mut store, setup, Protocol::Resp3);
    let cases: &[(&str, &str, &str)] = &[
        ("GET missing", "_\r\n", "$-1\r\n"),
        ("LPOP missing 2", "_\r\n", "*-1\r\n"),
        (
            "HGETALL h",
            "%1\r\n$1\r\nf\r\n$1\r\nv\r\n",
            "*2\r\n$1\r\nf\r\n$1\r\nv\r\n",
        ),
        ("SMEMBERS s", "~1\r\n$1\r\nm\r\n", "*1\r\n$1\r\nm\r\n"),
        ("ZSCORE z a", ",1.5\r\n", "$3\r\n1.5\r\n"),
        (
            "ZRANGE z 0 -1 WITHSCORES",
            "*2\r\n*2\r\n$1\r\na\r\n,1.5\r\n*2\r\n$1\r\nb\r\n,2\r\n",
            "*4\r\n$1\r\na\r\n$3\r\n1.5\r\n$1\r\nb\r\n$1\r\n2\r\n",
        ),
        (
            "CONFIG GET appendonly",
            "%1\r\n$10\r\nappendonly\r\n$2\r\nno\r\n",
            "*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n",
        ),
        ("COMMAND DOCS", "%0\r\n", "*0\r\n"),
    ];
    for (command, resp3, resp2) in cases {
        assert_eq!(
            transcript_in(&mut store, command, Protocol::Resp3),
            *resp3,
            "{command} in RESP3"
        );
        assert_eq!(
            transcript_in(&mut store, command, Protocol::Resp2),
            *resp2,
            "{command} in RESP2"
        );
    }
}

#[test]
fn hello_and_client_keep_the_connection_state() {
    let args = |s: &str| {
        s.split(' ')
            .map(|a| a.as_bytes().to_vec())
            .collect::<Vec<_>>()
    };
    let mut session = Session::new(42);
    let run = |session: &mut Session, s: &str| match Command::parse(args(s)) {
        Ok(cmd) => session.execute(cmd),
        Err(reply) => (reply, After::Continue),
    };
    let (hello, _) = run(&mut session, "HELLO 3 AUTH default anything SETNAME app");
    let Reply::Map(fields) = hello else {
        panic!("HELLO answers a map")
    };
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| *k == Reply::Bulk(name.as_bytes().to_vec()))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(field("proto"), Some(Reply::Integer(3)));
    assert_eq!(field("id"), Some(Reply::Integer(42)));
    assert_eq!(session.protocol(), Protocol::Resp3);
    assert_eq!(
        run(&mut session, "CLIENT GETNAME").0,
        Reply::Bulk(b"app".to_vec())
    );
    assert_eq!(run(&mut session, "CLIENT ID").0, Reply::Integer(42));
    assert_eq!(run(&mut session, "CLIENT SETNAME other").0, Reply::ok());
    assert_eq!(
        run(&mut session, "CLIENT GETNAME").0,
        Reply::Bulk(b"other".to_vec())
    );
    assert_eq!(
        run(&mut session, "CLIENT SETINFO LIB-NAME redis-py").0,
        Reply::ok()
    );
    assert_eq!(
        run(&mut session, "CLIENT SETINFO FOO x").0,
        Reply::error("ERR Unrecognized option 'FOO'")
    );
    assert_eq!(
        run(&mut session, "HELLO 4").0,
        Reply::error("NOPROTO unsupported protocol version")
    );
    assert_eq!(
        run(&mut session, "HELLO 3 AUTH alice pw").0,
        Reply::error("WRONGPASS invalid username-password pair or user is disabled.")
    );
    assert_eq!(
        session.protocol(),
        Protocol::Resp3,
        "a refused HELLO changes nothing"
    );
    let (_, _) = run(&mut session, "HELLO 2");
    assert_eq!(session.protocol(), Protocol::Resp2);
    assert_eq!(run(&mut session, "QUIT"), (Reply::ok(), After::Close));
    assert_eq!(run(&mut session, "SHUTDOWN NOSAVE").1, After::Shutdown);
    assert_eq!(
        run(&mut session, "SHUTDOWN LATER").0,
        Reply::error("ERR syntax error")
    );
}

#[test]
fn a_multi_block_is_bounded() {
    let args = |s: &str| {
        s.split(' ')
            .map(|a| a.as_bytes().to_vec())
            .collect::<Vec<_>>()
    };
    let mut session = Session::new(1);
    session.execute(Command::parse(args("MULTI")).unwrap());
    for _ in 0..kv_server::kv::MAX_QUEUED {
        assert!(session.queue(Command::parse(args("INCR n"))).is_ok());
    }
    let refused = session.queue(Command::parse(args("INCR n"))).unwrap();
    assert!(refused.is_error(), "{refused:?}");
    let Err(Ok(exec)) = session.queue(Command::parse(args("EXEC"))) else {
        panic!("EXEC is not queued")
    };
    let (reply, after) = session.execute(exec);
    assert_eq!(
        reply,
        Reply::error("EXECABORT Transaction discarded because of previous errors.")
    );
    assert_eq!(
        after,
        After::Unwatch(Vec::new()),
        "nothing ran, nothing is watched"
    );
}
