//! The load client of the echo benchmark (`bench/echo_bench.sh`): one thread, plain
//! mio, the same client against every server. It opens `--conns` connections, keeps
//! `--inflight` messages of `--size` bytes in flight on each (a message is sent
//! again as soon as its echo is back in full), and after `--secs` seconds (or
//! `--messages` echoes) prints one line:
//!
//! ```text
//! echo_load conns=64 size=100 inflight=1 churn=false secs=5.000 messages=812345 msgs_per_sec=162469 server_us_per_msg=5.91
//! ```
//!
//! With `--churn`, every connection carries one message: once its echo is back it
//! is closed and a new connection takes its place (an accept-heavy load, as HTTP
//! without keep-alive is); `messages` then counts connections served.
//!
//! `server_us_per_msg` is the server's CPU time (user + system, from
//! `/proc/PID/stat`) over the run divided by the echoes, when `--server-pid` is
//! given (else `-`).
//!
//! ```text
//! cargo run --release --example echo_load -- --addr 127.0.0.1:9000 --secs 5 --server-pid 1234
//! ```

#[path = "cli/mod.rs"]
mod cli;

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lexopt::prelude::*;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

struct Args {
    addr: SocketAddr,
    conns: usize,
    size: usize,
    inflight: usize,
    secs: f64,
    messages: Option<u64>,
    server_pid: Option<u32>,
    churn: bool,
}

fn parse_args() -> Args {
    let opt = |flag: &str, what: &str| (flag.to_string(), what.to_string());
    let options = [
        opt(
            "--addr HOST:PORT",
            "the echo server (default 127.0.0.1:9000)",
        ),
        opt("--conns N", "connections (default 64)"),
        opt("--size N", "bytes per message (default 100)"),
        opt(
            "--inflight N",
            "messages in flight per connection (default 1)",
        ),
        opt("--secs S", "how long to run (default 5)"),
        opt("--messages N", "stop after this many echoes instead"),
        opt(
            "--server-pid PID",
            "the server's process, for its CPU time per message",
        ),
        opt(
            "--churn",
            "a new connection for every message (measures accepting)",
        ),
    ];
    let usage = cli::usage(
        "echo_load",
        "A single-threaded echo load client; prints one machine-readable line.",
        &options,
    );
    cli::parse_or_exit("echo_load", &usage, |p| {
        let mut args = Args {
            addr: "127.0.0.1:9000".parse().expect("a valid default address"),
            conns: 64,
            size: 100,
            inflight: 1,
            secs: 5.0,
            messages: None,
            server_pid: None,
            churn: false,
        };
        while let Some(arg) = p.next()? {
            match arg {
                Long("addr") => args.addr = cli::value(p, "--addr")?,
                Long("conns") => args.conns = cli::count(p, "--conns")?,
                Long("size") => args.size = cli::count(p, "--size")?,
                Long("inflight") => args.inflight = cli::count(p, "--inflight")?,
                Long("secs") => args.secs = cli::value(p, "--secs")?,
                Long("messages") => args.messages = Some(cli::value(p, "--messages")?),
                Long("server-pid") => args.server_pid = Some(cli::value(p, "--server-pid")?),
                Long("churn") => args.churn = true,
                Short('h') | Long("help") => return Ok(None),
                _ => return Err(arg.unexpected()),
            }
        }
        if args.churn && args.inflight != 1 {
            return Err("--churn sends one message per connection: --inflight must be 1".into());
        }
        Ok(Some(args))
    })
}

/// A new connection to `addr`, registered under `token`.
fn connect(poll: &Poll, addr: SocketAddr, token: usize) -> io::Result<TcpStream> {
    let std_stream = std::net::TcpStream::connect(addr)?;
    std_stream.set_nodelay(true)?;
    std_stream.set_nonblocking(true)?;
    let mut stream = TcpStream::from_std(std_stream);
    poll.registry().register(
        &mut stream,
        Token(token),
        Interest::READABLE | Interest::WRITABLE,
    )?;
    Ok(stream)
}

/// One connection: what it still has to send, and how much of the echo is back.
struct Conn {
    stream: TcpStream,
    /// Bytes queued to send (whole messages), `out[sent..]` not sent yet.
    out: Vec<u8>,
    sent: usize,
    /// Echoed bytes received that do not make a whole message yet.
    partial: usize,
}

impl Conn {
    /// Sends what is queued until the socket is full.
    fn flush(&mut self) -> io::Result<()> {
        while self.sent < self.out.len() {
            match self.stream.write(&self.out[self.sent..]) {
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
        }
        Ok(())
    }
}

/// The CPU time process `pid` has used so far (user + system).
fn cpu_time(pid: u32) -> io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces: count fields after its ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::other("unexpected /proc/PID/stat format"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15, the 12th and 13th after the name.
    let ticks = |i: usize| -> io::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| io::Error::other("unexpected /proc/PID/stat format"))
    };
    let total = ticks(11)? + ticks(12)?;
    // /proc counts in USER_HZ ticks, 100 a second on Linux (`getconf CLK_TCK`).
    Ok(Duration::from_millis(total * 10))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args();
    let message = vec![b'x'; args.size];
    let mut poll = Poll::new()?;
    let mut conns = Vec::with_capacity(args.conns);
    for i in 0..args.conns {
        conns.push(Conn {
            stream: connect(&poll, args.addr, i)?,
            out: Vec::new(),
            sent: 0,
            partial: 0,
        });
    }
    let cpu_before = args.server_pid.map(cpu_time).transpose()?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.secs);
    for conn in &mut conns {
        for _ in 0..args.inflight {
            conn.out.extend_from_slice(&message);
        }
        conn.flush()?;
    }
    let mut echoed: u64 = 0;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    'run: loop {
        let now = Instant::now();
        if now >= deadline && args.messages.is_none() {
            break;
        }
        poll.poll(&mut events, Some(deadline.saturating_duration_since(now)))?;
        for event in events.iter() {
            let conn = &mut conns[event.token().0];
            if event.is_readable() {
                loop {
                    match conn.stream.read(&mut buf) {
                        Ok(0) => return Err("the server closed a connection".into()),
                        Ok(n) => {
                            conn.partial += n;
                            let whole = conn.partial / args.size;
                            conn.partial %= args.size;
                            echoed += whole as u64;
                            if args.churn && whole > 0 {
                                // Its one message is back: a new connection for the next.
                                poll.registry().deregister(&mut conn.stream)?;
                                conn.stream = connect(&poll, args.addr, event.token().0)?;
                                conn.out.extend_from_slice(&message);
                                break;
                            }
                            for _ in 0..whole {
                                conn.out.extend_from_slice(&message);
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            conn.flush()?;
            if args.messages.is_some_and(|m| echoed >= m) {
                break 'run;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let server_us = match (args.server_pid, cpu_before) {
        (Some(pid), Some(before)) if echoed > 0 => {
            let used = cpu_time(pid)?.saturating_sub(before);
            format!("{:.2}", used.as_secs_f64() * 1e6 / echoed as f64)
        }
        _ => "-".to_string(),
    };
    println!(
        "echo_load conns={} size={} inflight={} churn={} secs={secs:.3} messages={echoed} msgs_per_sec={:.0} server_us_per_msg={server_us}",
        args.conns,
        args.size,
        args.inflight,
        args.churn,
        echoed as f64 / secs
    );
    Ok(())
}
