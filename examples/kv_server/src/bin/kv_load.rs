//! A load client for Redis-protocol servers: a mix of SET and GET (1:10 by default)
//! over a key space (100,000 keys), on many connections, in pipelines, for a fixed
//! number of requests. The same client drives `kv_server` and `redis-server`, so their
//! numbers compare (Debian has no memtier_benchmark).
//!
//! ```text
//! kv_load --port 6379 [--connections 50] [--pipeline 16] [--keys 100000]
//!         [--gets-per-set 10] [--requests 1000000] [--threads 2] [--value-size 32]
//! ```
//! Prints one line: `requests <n> seconds <s> rps <r> errors <e>`. Each thread owns a
//! share of the connections; it writes one pipeline to every connection, then reads
//! every reply, so `connections * pipeline` requests are in flight at once.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[path = "../../../cli/mod.rs"]
mod cli;

use lexopt::prelude::*;

struct Args {
    port: u16,
    connections: usize,
    pipeline: usize,
    keys: u64,
    gets_per_set: u64,
    requests: u64,
    threads: usize,
    value_size: usize,
}

fn parse_args() -> Args {
    let options: Vec<(String, String)> = [
        ("--port N", "the server's port on 127.0.0.1 (required)"),
        ("--connections N", "connections (default 50)"),
        ("--pipeline N", "requests per pipeline (default 16)"),
        ("--keys N", "keys to pick from (default 100000)"),
        ("--gets-per-set N", "GETs for every SET (default 10)"),
        ("--requests N", "requests in all (default 1000000)"),
        (
            "--threads N",
            "client threads sharing the connections (default 2)",
        ),
        ("--value-size N", "bytes per SET value (default 32)"),
    ]
    .iter()
    .map(|(f, w)| (f.to_string(), w.to_string()))
    .collect();
    let about = "A SET/GET load client for Redis-protocol servers.";
    let usage = cli::usage("kv_load", about, &options);
    cli::parse_or_exit("kv_load", &usage, |p| {
        let mut args = Args {
            port: 0,
            connections: 50,
            pipeline: 16,
            keys: 100_000,
            gets_per_set: 10,
            requests: 1_000_000,
            threads: 2,
            value_size: 32,
        };
        while let Some(arg) = p.next()? {
            match arg {
                Long("port") => args.port = cli::value(p, "--port")?,
                Long("connections") => args.connections = cli::count(p, "--connections")?,
                Long("pipeline") => args.pipeline = cli::count(p, "--pipeline")?,
                Long("keys") => args.keys = cli::count(p, "--keys")? as u64,
                Long("gets-per-set") => args.gets_per_set = cli::value(p, "--gets-per-set")?,
                Long("requests") => args.requests = cli::count(p, "--requests")? as u64,
                Long("threads") => args.threads = cli::count(p, "--threads")?,
                Long("value-size") => args.value_size = cli::value(p, "--value-size")?,
                Short('h') | Long("help") => return Ok(None),
                _ => return Err(arg.unexpected()),
            }
        }
        if args.port == 0 {
            return Err("--port is required".into());
        }
        Ok(Some(args))
    })
}

/// A small xorshift generator: which key, and whether SET or GET.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Reads one reply off `r` (any RESP2 type); whether it was an error.
fn read_reply(r: &mut impl BufRead, line: &mut Vec<u8>) -> std::io::Result<bool> {
    line.clear();
    r.read_until(b'\n', line)?;
    if line.is_empty() {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let n = || -> i64 {
        std::str::from_utf8(&line[1..line.len().saturating_sub(2)])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(-1)
    };
    match line[0] {
        b'-' => Ok(true),
        b'$' => {
            let len = n();
            if len >= 0 {
                let mut skip = vec![0; len as usize + 2];
                r.read_exact(&mut skip)?;
            }
            Ok(false)
        }
        b'*' => {
            let len = n();
            let mut error = false;
            for _ in 0..len.max(0) {
                error |= read_reply(r, line)?;
            }
            Ok(error)
        }
        _ => Ok(false),
    }
}

fn run_thread(args: &Args, connections: usize, requests: u64, seed: u64) -> u64 {
    let mut conns: Vec<(TcpStream, BufReader<TcpStream>)> = (0..connections)
        .map(|_| {
            let s = TcpStream::connect(("127.0.0.1", args.port)).expect("connect");
            s.set_nodelay(true).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            let r = BufReader::with_capacity(1 << 16, s.try_clone().unwrap());
            (s, r)
        })
        .collect();
    let mut rng = Rng(seed | 1);
    let value = vec![b'v'; args.value_size];
    let (mut sent, mut errors) = (0u64, 0u64);
    let mut buf = Vec::new();
    let mut line = Vec::new();
    while sent < requests {
        let mut in_flight = vec![0usize; conns.len()];
        for (i, (stream, _)) in conns.iter_mut().enumerate() {
            buf.clear();
            for _ in 0..args.pipeline {
                if sent >= requests {
                    break;
                }
                let key = format!("key:{:012}", rng.next() % args.keys);
                if rng.next() % (args.gets_per_set + 1) == 0 {
                    write!(
                        buf,
                        "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n",
                        key.len(),
                        value.len()
                    )
                    .unwrap();
                    buf.extend_from_slice(&value);
                    buf.extend_from_slice(b"\r\n");
                } else {
                    write!(buf, "*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).unwrap();
                }
                sent += 1;
                in_flight[i] += 1;
            }
            stream.write_all(&buf).expect("send");
        }
        for (i, (_, reader)) in conns.iter_mut().enumerate() {
            for _ in 0..in_flight[i] {
                errors += u64::from(read_reply(reader, &mut line).expect("reply"));
            }
        }
    }
    errors
}

fn main() {
    let args = parse_args();
    let threads = args.threads.min(args.connections);
    let started = Instant::now();
    let errors: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let conns =
                    args.connections / threads + usize::from(t < args.connections % threads);
                let requests = args.requests / threads as u64;
                let args = &args;
                s.spawn(move || run_thread(args, conns, requests, 0x9E37_79B9 * (t as u64 + 1)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let secs = started.elapsed().as_secs_f64();
    let total = args.requests / threads as u64 * threads as u64;
    println!(
        "requests {total} seconds {secs:.3} rps {:.0} errors {errors}",
        total as f64 / secs
    );
}
