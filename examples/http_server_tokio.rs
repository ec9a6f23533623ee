//! The peer of `http_server` for the benchmark: the same hyper handler and settings
//! on tokio's multi-thread runtime (default 2 workers), the way a tokio user writes
//! it: one listener, one accept loop, one spawned task per connection.
//!
//! ```text
//! cargo run --release --features hyper --example http_server_tokio -- --port 8081 --workers 2
//! ```

#[path = "http_common/mod.rs"]
mod common;

use std::io::Write;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = common::Args::parse("http_server_tokio", "workers", 2, None);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
        let port = listener.local_addr()?.port();
        println!("listening on 127.0.0.1:{port} ({} workers)", args.threads);
        std::io::stdout().flush()?;
        let mut builder = http1::Builder::new();
        builder.timer(TokioTimer::new());
        common::configure(&mut builder);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, _) = match accepted {
                        Ok(a) => a,
                        Err(e) => { eprintln!("accept: {e}"); continue; }
                    };
                    let _ = stream.set_nodelay(true);
                    let service = service_fn(|req| {
                        common::route(req, || {
                            let t = std::thread::current();
                            format!("worker {}", t.name().unwrap_or("?"))
                        })
                    });
                    #[cfg(feature = "http2")]
                    if args.http2 {
                        let mut h2 = hyper::server::conn::http2::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        );
                        h2.timer(TokioTimer::new());
                        let conn = h2.serve_connection(TokioIo::new(stream), service);
                        tokio::spawn(async move {
                            let _ = conn.await;
                        });
                        continue;
                    }
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                }
                _ = tokio::signal::ctrl_c() => break,
            }
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
