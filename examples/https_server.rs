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

use std::convert::Infallible;
use std::error::Error;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use shardloop::net::TcpStream;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// A client gets this long to finish its TLS handshake (one that connects and says
/// nothing would otherwise hold its task and descriptor for good).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP/1.1 keep-alive connection with no new request for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

fn main() -> Result<(), Box<dyn Error>> {
    let (args, [cert, key]) = common::Args::parse(["--cert", "--key"]);
    let acceptor = TlsAcceptor::from(tls_config(Path::new(&cert), Path::new(&key))?);
    common::serve(&args, "https", move |stream| {
        serve_tls(acceptor.clone(), stream)
    })
}

/// rustls on the ring provider, with the certificate and key from these PEM files,
/// offering HTTP/2 and HTTP/1.1 through ALPN.
fn tls_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, Box<dyn Error>> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
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
            .serve_connection(io, service_fn(route))
            .await
    } else {
        shardloop::hyper::http1()
            .header_read_timeout(IDLE_TIMEOUT)
            .serve_connection(io, service_fn(route))
            .await
    };
}

async fn route(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() != "/" {
        let mut resp = Response::new(Full::new(Bytes::from_static(b"not found\n")));
        *resp.status_mut() = StatusCode::NOT_FOUND;
        return Ok(resp);
    }
    let body = format!(
        "hello from shard {} over {:?}\n",
        common::shard(),
        req.version()
    );
    Ok(Response::new(Full::new(Bytes::from(body))))
}
