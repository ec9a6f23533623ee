//! What `blocking_handoff` and its tokio peer share: the command line and query strings.

use std::time::Duration;

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
/// `default_spin` is `Some` (also `--flag=value`).
pub fn parse_args(
    program: &str,
    default_port: u16,
    default_spin: Option<Duration>,
) -> Result<Args, String> {
    let spin_flag = if default_spin.is_some() {
        " [--spin-us N]"
    } else {
        ""
    };
    let usage = format!(
        "usage: {program} [--port N] [--shards N] [--workers N] [--timeout-ms N]{spin_flag}"
    );
    let mut args = Args {
        port: default_port,
        shards: num_cpus::get(),
        workers: 8,
        timeout: Duration::from_millis(100),
        spin: default_spin,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n.to_string(), v.to_string()),
            None => {
                if flag == "--help" || flag == "-h" {
                    return Err(usage);
                }
                let v = it.next().ok_or(format!("{flag} needs a value\n{usage}"))?;
                (flag, v)
            }
        };
        let bad = |e: std::num::ParseIntError| format!("{name} {value}: {e}\n{usage}");
        match name.as_str() {
            "--port" => args.port = value.parse().map_err(bad)?,
            "--shards" => args.shards = value.parse().map_err(bad)?,
            "--workers" => args.workers = value.parse().map_err(bad)?,
            "--timeout-ms" => args.timeout = Duration::from_millis(value.parse().map_err(bad)?),
            "--spin-us" if args.spin.is_some() => {
                args.spin = Some(Duration::from_micros(value.parse().map_err(bad)?))
            }
            _ => return Err(format!("unknown option {name}\n{usage}")),
        }
    }
    if args.shards == 0 || args.workers == 0 {
        return Err(format!(
            "--shards and --workers must be at least 1\n{usage}"
        ));
    }
    Ok(args)
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
