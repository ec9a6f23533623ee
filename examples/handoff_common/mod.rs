//! The command line shared by `blocking_handoff` and its tokio peer.

use std::time::Duration;

/// The command line.
pub struct Args {
    pub port: u16,
    pub shards: usize,
    pub workers: usize,
    pub timeout: Duration,
}

/// Parses `--port N --shards N --workers N --timeout-ms N` (also `--flag=value`).
pub fn parse_args(program: &str, default_port: u16) -> Result<Args, String> {
    let usage = format!("usage: {program} [--port N] [--shards N] [--workers N] [--timeout-ms N]");
    let mut args = Args {
        port: default_port,
        shards: num_cpus::get(),
        workers: 8,
        timeout: Duration::from_millis(100),
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
