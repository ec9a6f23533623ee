//! HTTPS on every shard: rustls through tokio-rustls, over shardloop's `TcpStream`
//! (cargo feature `tokio-io`: tokio's io traits, no tokio runtime), with hyper on top.
//! ALPN picks the protocol: HTTP/2 (`shardloop::hyper::http2()`) when the client
//! asks for `h2`, HTTP/1.1 (`shardloop::hyper::http1()`) otherwise.
//!
//! ```text
//! cargo run --release --features tokio-io,hyper,http2 --example https_server -- \
//!     --port 8443 --cert cert.pem --key key.pem
//! curl --cacert ca.pem https://localhost:8443/
//! ```
//!
//! `--cert` is a PEM file with the certificate chain (the server's first), `--key` a
//! PEM file with its private key. Routes: `/` says which shard answered and over
//! which HTTP version; anything else is 404. SIGINT or SIGTERM stops it.

#[path = "shard_common/mod.rs"]
mod common;
#[path = "tls_common/mod.rs"]
mod tls;

use std::error::Error;
use std::path::Path;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use shardloop::net::TcpStream;
use tokio_rustls::TlsAcceptor;

/// A client gets this long to finish its TLS handshake (one that connects and says
/// nothing would otherwise hold its task and descriptor for good).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP/1.1 keep-alive connection with no new request for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

fn main() -> Result<(), Box<dyn Error>> {
    let (args, [cert, key]) = common::Args::parse("https_server", ["--cert", "--key"]);
    let acceptor = TlsAcceptor::from(tls::config(Path::new(&cert), Path::new(&key))?);
    common::serve(&args, "https", move |stream| {
        serve_tls(acceptor.clone(), stream)
    })
}

/// One connection: the TLS handshake, then HTTP in the version ALPN settled on.
async fn serve_tls(acceptor: TlsAcceptor, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let tls = match shardloop::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        // A client that is not speaking TLS, or does not trust us: its problem,
        // logged, and its connection closed.
        Ok(Err(e)) => return eprintln!("shard {}: tls handshake: {e}", common::shard()),
        Err(_) => return eprintln!("shard {}: tls handshake timed out", common::shard()),
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    // hyper-util's adapter from tokio's io traits to hyper's: no runtime involved.
    let io = TokioIo::new(tls);
    // Errors here are one client's (a reset, a protocol error): the connection
    // ends, the server goes on.
    let _ = if h2 {
        shardloop::hyper::http2()
            .serve_connection(
                io,
                service_fn(|req| tls::route(req, || format!("shard {}", common::shard()))),
            )
            .await
    } else {
        shardloop::hyper::http1()
            .header_read_timeout(IDLE_TIMEOUT)
            .serve_connection(
                io,
                service_fn(|req| tls::route(req, || format!("shard {}", common::shard()))),
            )
            .await
    };
}
