//! What `blocking_handoff` and its tokio peer share: the command line (parsed by
//! `cli`) and query strings.

use std::time::Duration;

use lexopt::prelude::*;

#[path = "../cli/mod.rs"]
mod cli;

/// The command line.
pub struct Args {
    pub port: u16,
    pub shards: usize,
    pub workers: usize,
    pub timeout: Duration,
    /// How long an idle shard looks for work before it parks (`--spin-us`); `None`
    /// for a server without shardloop shards, which then refuses the flag.
    pub spin: Option<Duration>,
}

/// Parses `--port N --shards N --workers N --timeout-ms N`, and `--spin-us N` where
/// `default_spin` is `Some` (each also as `--flag=value`), or exits (see `cli`).
pub fn parse_args(program: &str, default_port: u16, default_spin: Option<Duration>) -> Args {
    let defaults = Args {
        port: default_port,
        shards: num_cpus::get(),
        workers: 8,
        timeout: Duration::from_millis(100),
        spin: default_spin,
    };
    let mut options = vec![
        (
            "--port N".to_string(),
            format!("port to listen on (default {default_port}, 0 = any free port)"),
        ),
        (
            "--shards N".to_string(),
            format!("loops the work is handed to (default {})", defaults.shards),
        ),
        (
            "--workers N".to_string(),
            format!("blocking handler threads (default {})", defaults.workers),
        ),
        (
            "--timeout-ms N".to_string(),
            format!(
                "how long a handler waits for its shard (default {})",
                defaults.timeout.as_millis()
            ),
        ),
    ];
    if let Some(d) = default_spin {
        options.push(cli::spin_option(d));
    }
    let about = "A blocking HTTP server (tiny_http) on 127.0.0.1 handing each request to a loop.";
    let usage = cli::usage(program, about, &options);
    cli::parse_or_exit(program, &usage, |p| {
        let mut args = defaults;
        while let Some(arg) = p.next()? {
            match arg {
                Long("port") => args.port = cli::value(p, "--port")?,
                Long("shards") => args.shards = cli::count(p, "--shards")?,
                Long("workers") => args.workers = cli::count(p, "--workers")?,
                Long("timeout-ms") => {
                    args.timeout = Duration::from_millis(cli::value(p, "--timeout-ms")?)
                }
                Long("spin-us") if args.spin.is_some() => {
                    args.spin = Some(Duration::from_micros(cli::value(p, "--spin-us")?))
                }
                Short('h') | Long("help") => return Ok(None),
                _ => return Err(arg.unexpected()),
            }
        }
        Ok(Some(args))
    })
}

/// The percent-decoded value of `name` in a query string (`+` is a space).
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| percent_decode(v))
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
