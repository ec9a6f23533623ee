//! What both HTTP examples share: the routes (so the benchmark compares runtimes,
//! not handlers), the server settings, and the command line (parsed by `cli`).

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::{Request, Response, StatusCode};
use lexopt::prelude::*;

#[path = "../cli/mod.rs"]
mod cli;

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
    /// `--http2`: HTTP/2 with prior knowledge (h2c) instead of HTTP/1.1.
    pub http2: bool,
}

impl Args {
    /// Parses the command line of `program`, whose thread count is `--{threads_flag}`
    /// (`shards` or `workers`), or exits (see `cli`).
    pub fn parse(
        program: &str,
        threads_flag: &str,
        default_threads: usize,
        default_spin: Option<Duration>,
    ) -> Args {
        let threads_option = format!("--{threads_flag}");
        let mut options = cli::server_options(threads_flag, default_threads);
        options.push((
            "--http2".to_string(),
            "serve HTTP/2 with prior knowledge (h2c, as h2load and curl \
             --http2-prior-knowledge speak it) instead of HTTP/1.1 (needs the http2 feature)"
                .to_string(),
        ));
        if let Some(d) = default_spin {
            options.push(cli::spin_option(d));
        }
        let about = "An HTTP/1.1 (or HTTP/2) server (hyper) on 127.0.0.1.";
        let usage = cli::usage(program, about, &options);
        cli::parse_or_exit(program, &usage, |p| {
            let mut args = Args {
                port: 8080,
                threads: default_threads,
                spin: default_spin,
                http2: false,
            };
            while let Some(arg) = p.next()? {
                match arg {
                    Long("port") => args.port = cli::value(p, "--port")?,
                    Long(f) if f == threads_flag => args.threads = cli::count(p, &threads_option)?,
                    Long("spin-us") if args.spin.is_some() => {
                        args.spin = Some(Duration::from_micros(cli::value(p, "--spin-us")?))
                    }
                    Long("http2") if cfg!(feature = "http2") => args.http2 = true,
                    Long("http2") => {
                        return Err("--http2: built without the http2 feature \
                                    (cargo run --features hyper,http2 ...)"
                            .into())
                    }
                    Short('h') | Long("help") => return Ok(None),
                    _ => return Err(arg.unexpected()),
                }
            }
            Ok(Some(args))
        })
    }
}
