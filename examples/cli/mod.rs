//! The examples' command lines, all parsed the same way with `lexopt`: `--flag value`
//! and `--flag=value` both work; `--help` (or `-h`) prints the usage on stdout and
//! exits 0; a bad argument prints what is wrong, then the usage, on stderr and exits 2.
//!
//! Every example with flags includes this file, `kv_server` too (through a `#[path]`
//! from its own package), so that they cannot drift apart again.

use std::fmt::Display;
use std::str::FromStr;

use lexopt::{Error, Parser};

/// The `--help` text of `program`: a usage line, `about`, then each option (as
/// written on the command line, e.g. `--port N`) with what it does, wrapped to 80
/// columns; `--help` itself is added.
pub fn usage(program: &str, about: &str, options: &[(String, String)]) -> String {
    let help = ("-h, --help".to_string(), "print this help".to_string());
    let options: Vec<&(String, String)> = options.iter().chain([&help]).collect();
    let width = options
        .iter()
        .map(|(flag, _)| flag.len())
        .max()
        .unwrap_or(0)
        + 4;
    let mut text = format!("usage: {program} [OPTIONS]\n\n{about}\n\nOptions:\n");
    for (flag, what) in options {
        let mut line = format!("  {flag:<0$}", width - 2);
        for word in what.split(' ') {
            if line.len() > width && line.len() + 1 + word.len() > 80 {
                text += line.trim_end();
                text += "\n";
                line = " ".repeat(width);
            } else if line.len() > width {
                line.push(' ');
            }
            line += word;
        }
        text += &line;
        text.push('\n');
    }
    text + "Values go as `--flag value` or `--flag=value`."
}

/// Parses the process's arguments with `parse`, which returns `program`'s settings,
/// or `None` when it met `--help`; or exits, as the module docs say.
pub fn parse_or_exit<T>(
    program: &str,
    usage: &str,
    parse: impl FnOnce(&mut Parser) -> Result<Option<T>, Error>,
) -> T {
    let mut parser = Parser::from_env();
    match parse(&mut parser) {
        Ok(Some(settings)) => settings,
        Ok(None) => {
            println!("{usage}");
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("{program}: {e}\n\n{usage}");
            std::process::exit(2)
        }
    }
}

/// The `--port N` of a server that takes nothing else (`default`, and 0 for any
/// free port); `--help` prints `about`.
#[allow(dead_code)] // for the single-loop servers only
pub fn port_only(program: &str, about: &str, default: u16) -> u16 {
    use lexopt::prelude::*;
    let options = [(
        "--port N".to_string(),
        format!("port to listen on (default {default}, 0 = any free port)"),
    )];
    let usage = usage(program, about, &options);
    parse_or_exit(program, &usage, |p| {
        let mut port = default;
        while let Some(arg) = p.next()? {
            match arg {
                Long("port") => port = value(p, "--port")?,
                Short('h') | Long("help") => return Ok(None),
                _ => return Err(arg.unexpected()),
            }
        }
        Ok(Some(port))
    })
}

/// The `--port N` and `--proactor` of a single-loop shardloop server: the port
/// (`default`, and 0 for any free port) and whether its loop runs on io_uring;
/// `--help` prints `about`.
#[allow(dead_code)] // for the single-loop shardloop servers only
pub fn port_and_proactor(program: &str, about: &str, default: u16) -> (u16, bool) {
    use lexopt::prelude::*;
    let options = [
        (
            "--port N".to_string(),
            format!("port to listen on (default {default}, 0 = any free port)"),
        ),
        proactor_option("the loop"),
    ];
    let usage = usage(program, about, &options);
    parse_or_exit(program, &usage, |p| {
        let (mut port, mut proactor) = (default, false);
        while let Some(arg) = p.next()? {
            match arg {
                Long("port") => port = value(p, "--port")?,
                Long("proactor") => proactor = true,
                Short('h') | Long("help") => return Ok(None),
                _ => return Err(arg.unexpected()),
            }
        }
        Ok(Some((port, proactor)))
    })
}

/// The `--proactor` option of a shardloop server, as `usage` takes it; `what` runs
/// on io_uring with it ("the loop", "every shard").
#[allow(dead_code)] // not every example is a shardloop server
pub fn proactor_option(what: &str) -> (String, String) {
    (
        "--proactor".to_string(),
        format!("run {what} on io_uring (the proactor loop) instead of epoll"),
    )
}

/// The value of `option`, the option just read, parsed as a `T`; the error names
/// the option and the value.
pub fn value<T>(parser: &mut Parser, option: &str) -> Result<T, Error>
where
    T: FromStr,
    T::Err: Display,
{
    let raw = parser.value()?;
    let text = raw
        .to_str()
        .ok_or_else(|| format!("{option}: {raw:?} is not valid UTF-8"))?;
    text.parse()
        .map_err(|e| format!("{option}: cannot parse {text:?}: {e}").into())
}

/// The value of `option` as a count of at least 1 (shards, threads).
#[allow(dead_code)] // not every example has a count (echo_streams runs one loop)
pub fn count(parser: &mut Parser, option: &str) -> Result<usize, Error> {
    match value(parser, option)? {
        0 => Err(format!("{option}: must be at least 1").into()),
        n => Ok(n),
    }
}

/// The options every server example has: `--port N` and its thread count
/// (`--shards N`, or `--workers N` for a tokio peer), as `usage` takes them.
#[allow(dead_code)] // not every example includes a server
pub fn server_options(threads_flag: &str, default_threads: usize) -> Vec<(String, String)> {
    vec![
        (
            "--port N".to_string(),
            "port to listen on (default 8080, 0 = any free port)".to_string(),
        ),
        (
            format!("--{threads_flag} N"),
            format!("threads serving connections (default {default_threads})"),
        ),
    ]
}

/// The `--spin-us N` option of a server whose shards spin before they park, with
/// its default, as `usage` takes it.
#[allow(dead_code)] // not every example has shards that spin
pub fn spin_option(default: std::time::Duration) -> (String, String) {
    (
        "--spin-us N".to_string(),
        format!(
            "how long an idle shard looks for work before it parks, in microseconds \
             (default {}, 0 = at once)",
            default.as_micros()
        ),
    )
}
