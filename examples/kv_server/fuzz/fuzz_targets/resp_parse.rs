//! Fuzzes the RESP2 request path of `kv_server` end to end, without sockets.
//!
//! Input: byte 0 picks the read sizes, byte 1 the limits; the rest is what a client
//! sends. Checked on every input:
//! - nothing panics (parser, command parsing, execution, routing, merging);
//! - a connection never holds more than `max_buffer` bytes;
//! - reading in pieces gives the same requests as parsing the whole input at once;
//! - four shards (route, run the parts, merge) answer exactly like one store (`KEYS` in
//!   any order; `SCAN` cursors and `SPOP` picks differ by design);
//! - `Store::execute_into` writes exactly the bytes of `Store::execute`'s reply, in
//!   RESP2 and RESP3.
//!
//! Run: `cargo +nightly fuzz run resp_parse` from `examples/kv_server/`.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use kv_server::kv::{Command, Route, SetCommand, Store};
use kv_server::resp::{Decoder, Limits, Parser, Protocol, ProtocolError, Reply};

const SMALL: Limits = Limits {
    max_bulk_len: 40,
    max_array_len: 6,
    max_inline_len: 32,
    max_buffer: 64,
};

fn shard_of(key: &[u8]) -> usize {
    key.iter().map(|&b| b as usize).sum::<usize>() % 4
}

fn run_sharded(stores: &mut [Store], cmd: Command, now: Instant) -> Option<Reply> {
    Some(match cmd.route(stores.len(), shard_of) {
        Route::Atomic(atomic) => futures_util::FutureExt::now_or_never(
            atomic.run(now, |i, step| std::future::ready(step(&mut stores[i]))),
        )
        .expect("steps on local stores finish at once"),
        Route::Local(cmd) => stores[0].execute(cmd, now),
        Route::Shard(i, cmd) => {
            assert!(cmd.keys().iter().all(|k| shard_of(k) == i));
            stores[i].execute(cmd, now)
        }
        Route::Split(split) => {
            let replies = split
                .parts
                .into_iter()
                .map(|(i, cmd)| {
                    assert!(cmd.keys().iter().all(|k| shard_of(k) == i));
                    stores[i].execute(cmd, now)
                })
                .collect();
            split.merge.merge(replies)
        }
        // Per-shard counts differ from one store's by design.
        Route::Info(_) => return None,
    })
}

/// An array reply's items in a fixed order (`KEYS` lists keys in no order).
fn sorted(reply: Reply) -> Vec<Vec<u8>> {
    let Reply::Array(items) = reply else {
        panic!("KEYS answers an array, not {reply:?}");
    };
    let mut keys: Vec<Vec<u8>> = items
        .into_iter()
        .map(|item| match item {
            Reply::Bulk(key) => key,
            other => panic!("KEYS lists bulk strings, not {other:?}"),
        })
        .collect();
    keys.sort();
    keys
}

/// Everything the parser makes of `input` in one slice.
fn parse_whole(input: &[u8], limits: Limits) -> (Vec<Vec<Vec<u8>>>, Option<ProtocolError>) {
    let mut parser = Parser::new(limits);
    let mut pos = 0;
    let mut requests = Vec::new();
    loop {
        match parser.parse(&input[pos..]) {
            Ok(p) => {
                pos += p.consumed;
                match p.request {
                    Some(r) => requests.push(r.to_vecs()),
                    None => return (requests, None),
                }
            }
            Err(e) => return (requests, Some(e)),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [read_seed, limit_seed, input @ ..] = data else {
        return;
    };
    let limits = if limit_seed & 1 == 0 {
        SMALL
    } else {
        Limits::default()
    };
    let read_size = 1 + (*read_seed as usize % 64);

    let now = Instant::now();
    let mut one = Store::new();
    let mut twin = Store::new();
    let mut four: Vec<Store> = (0..4).map(|_| Store::new()).collect();
    let mut decoder = Decoder::new(limits);
    let mut requests = Vec::new();
    let mut error = None;
    let mut fed = 0;
    'read: while fed < input.len() {
        let room = decoder.read_buf(read_size);
        assert!(!room.is_empty());
        let n = room.len().min(input.len() - fed);
        room[..n].copy_from_slice(&input[fed..fed + n]);
        decoder.commit(n);
        fed += n;
        assert!(decoder.held() <= limits.max_buffer);
        loop {
            match decoder.next_request() {
                Ok(Some(args)) => {
                    requests.push(args.to_vecs());
                    let Ok(cmd) = Command::parse_args(args) else {
                        continue;
                    };
                    // SPOP picks at random, from each store's own generator: one store
                    // and four would pick apart and hold different sets afterwards.
                    if matches!(cmd, Command::Sets(SetCommand::Pop(..))) {
                        continue;
                    }
                    let proto = if read_seed & 1 == 0 { Protocol::Resp2 } else { Protocol::Resp3 };
                    let single = one.execute(cmd.clone(), now);
                    let mut direct = Vec::new();
                    twin.execute_into(cmd.clone(), now, proto, &mut direct);
                    let mut encoded = Vec::new();
                    single.encode_as(&mut encoded, proto);
                    assert_eq!(direct, encoded);
                    let order_free = matches!(cmd, Command::Keys(_));
                    let scan = matches!(cmd, Command::Scan { .. });
                    if let Some(sharded) = run_sharded(&mut four, cmd, now) {
                        if order_free {
                            assert_eq!(sorted(sharded), sorted(single));
                        } else if !scan {
                            // A SCAN cursor names a shard: the walks differ by design.
                            assert_eq!(sharded, single);
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    assert!(e.to_resp().starts_with(b"-ERR Protocol error: "));
                    error = Some(e);
                    break 'read;
                }
            }
        }
    }

    let (whole, whole_error) = parse_whole(input, limits);
    assert_eq!(requests, whole);
    assert_eq!(error.is_some(), whole_error.is_some());
    if error != Some(ProtocolError::TooBigRequest)
        && whole_error != Some(ProtocolError::TooBigRequest)
    {
        assert_eq!(error, whole_error);
    }
});
