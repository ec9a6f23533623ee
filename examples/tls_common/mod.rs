//! The TLS settings the HTTPS examples share (`https_server` and its tokio peer
//! `https_server_tokio`), so that the benchmark compares runtimes, not TLS setups.

use std::convert::Infallible;
use std::error::Error;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;

/// rustls on the ring provider, with the certificate and key from these PEM files,
/// offering HTTP/2 and HTTP/1.1 through ALPN.
pub fn config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, Box<dyn Error>> {
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

/// The one route: `/` says who served it (`served_by`: a shard, a worker) and over
/// which HTTP version; anything else is 404.
pub async fn route(
    req: Request<Incoming>,
    served_by: impl FnOnce() -> String,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() != "/" {
        let mut resp = Response::new(Full::new(Bytes::from_static(b"not found\n")));
        *resp.status_mut() = StatusCode::NOT_FOUND;
        return Ok(resp);
    }
    let body = format!("hello from {} over {:?}\n", served_by(), req.version());
    Ok(Response::new(Full::new(Bytes::from(body))))
}
