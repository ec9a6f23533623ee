//! The peer of `https_server` for the benchmark: the same rustls settings
//! (`tls_common`: ring, ALPN `h2` then `http/1.1`) and the same hyper servers on
//! tokio's multi-thread runtime (default 2 workers), the way a tokio user writes it:
//! one listener, one accept loop, one spawned task per connection.
//!
//! ```text
//! cargo run --release --features hyper,http2 --example https_server_tokio -- \
//!     --port 8444 --workers 2 --cert cert.pem --key key.pem
//! ```

#[path = "shard_common/mod.rs"]
#[allow(dead_code)] // the shardloop server around handlers is not used here
mod common;
#[path = "tls_common/mod.rs"]
mod tls;

use std::error::Error;
use std::io::Write;
use std::path::Path;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio_rustls::TlsAcceptor;

fn main() -> Result<(), Box<dyn Error>> {
    let (args, [cert, key]) =
        common::parse_with("workers", 2, "https_server_tokio", ["--cert", "--key"]);
    let acceptor = TlsAcceptor::from(tls::config(Path::new(&cert), Path::new(&key))?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.shards)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
        let port = listener.local_addr()?.port();
        println!("listening on 127.0.0.1:{port} ({} workers, https)", args.shards);
        std::io::stdout().flush()?;
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let _ = stream.set_nodelay(true);
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(stream).await else { return };
                        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                        let io = TokioIo::new(tls);
                        let _ = if h2 {
                            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                                .timer(TokioTimer::new())
                                .serve_connection(io, service_fn(|req| tls::route(req, || format!("worker {}", std::thread::current().name().unwrap_or("?")))))
                                .await
                        } else {
                            hyper::server::conn::http1::Builder::new()
                                .timer(TokioTimer::new())
                                .serve_connection(io, service_fn(|req| tls::route(req, || format!("worker {}", std::thread::current().name().unwrap_or("?")))))
                                .await
                        };
                    });
                }
                _ = tokio::signal::ctrl_c() => break,
            }
        }
        Ok::<_, Box<dyn Error>>(())
    })
}
