//! What both HTTP examples share: the routes (so the benchmark compares runtimes,
//! not handlers), the server settings, and the command line.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::{Request, Response, StatusCode};

/// A keep-alive connection with no new request for this long is closed (hyper's
/// header-read timeout, which also bounds how long a request's headers may take).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Headers larger than this are answered with 431.
pub const MAX_HEADER_SIZE: usize = 16 * 1024;

/// `/`: plain text; `/json`: a JSON object; `/shard`: which shard (or worker) served
/// it, given by `served_by`; anything else: 404.
pub async fn route(
    req: Request<Incoming>,
    served_by: impl FnOnce() -> String,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (ctype, body) = match req.uri().path() {
        "/" => ("text/plain", Bytes::from_static(b"Hello, World!")),
        "/json" => (
            "application/json",
            Bytes::from_static(br#"{"message":"Hello, World!"}"#),
        ),
        "/shard" => ("text/plain", Bytes::from(served_by())),
        _ => {
            let mut resp = Response::new(Full::new(Bytes::from_static(b"not found\n")));
            *resp.status_mut() = StatusCode::NOT_FOUND;
            return Ok(resp);
        }
    };
    let mut resp = Response::new(Full::new(body));
    resp.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static(ctype),
    );
    Ok(resp)
}

/// The HTTP/1 settings both servers use, on a builder that has its runtime's timer.
pub fn configure(builder: &mut http1::Builder) {
    builder
        .keep_alive(true)
        .header_read_timeout(IDLE_TIMEOUT)
        .max_header_size(MAX_HEADER_SIZE);
}

/// `--port N` (default 8080; 0 picks a free one), `--shards N` / `--workers N`
/// (default: the number of CPUs, or `default_threads`), and, where the server has
/// one (`default_spin` is `Some`), `--spin-us N`: how long an idle shard looks for
/// work before it parks.
pub struct Args {
    pub port: u16,
    pub threads: usize,
    pub spin: Option<Duration>,
}

impl Args {
    pub fn parse(
        threads_flag: &str,
        default_threads: usize,
        default_spin: Option<Duration>,
    ) -> Args {
        let mut args = Args {
            port: 8080,
            threads: default_threads,
            spin: default_spin,
        };
        let flags = if default_spin.is_some() {
            format!("[--port N] [{threads_flag} N] [--spin-us N]")
        } else {
            format!("[--port N] [{threads_flag} N]")
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let mut value = |what: &str| -> usize {
                let v = it
                    .next()
                    .unwrap_or_else(|| usage(&flags, &format!("{flag} needs {what}")));
                v.parse()
                    .unwrap_or_else(|_| usage(&flags, &format!("{flag}: not {what}: {v:?}")))
            };
            match flag.as_str() {
                "--port" => {
                    args.port = u16::try_from(value("a port number"))
                        .unwrap_or_else(|_| usage(&flags, "--port: out of range"))
                }
                f if f == threads_flag => args.threads = value("a count").max(1),
                "--spin-us" if args.spin.is_some() => {
                    args.spin = Some(Duration::from_micros(value("microseconds") as u64))
                }
                "-h" | "--help" => usage(&flags, ""),
                other => usage(&flags, &format!("unknown argument {other:?}")),
            }
        }
        args
    }
}

fn usage(flags: &str, problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("error: {problem}");
    }
    let name = std::env::args().next().unwrap_or_default();
    eprintln!("usage: {name} {flags}");
    std::process::exit(if problem.is_empty() { 0 } else { 2 });
}
