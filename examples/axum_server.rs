//! An axum `Router` on every shard, served by shardloop's hyper adapters: axum
//! without its default features (no `tokio`, no `http1`: nothing of its own that
//! serves or needs tokio's runtime), since a `Router` is a tower `Service` and
//! routing needs no runtime. hyper-util's `auto` builder, given shardloop's executor
//! and timer, speaks HTTP/1.1, or HTTP/2 to a client that opens with HTTP/2's preface
//! ("prior knowledge", as `curl --http2-prior-knowledge` and `h2load` do).
//!
//! ```text
//! cargo run --release --features hyper,http2 --example axum_server -- --port 8080
//! curl 127.0.0.1:8080/hello/you
//! curl --http2-prior-knowledge 127.0.0.1:8080/version
//! h2load -n 1000 -c 4 http://127.0.0.1:8080/
//! ```
//!
//! Routes: `/` (plain text), `/shard` (which shard served it), `/version` (the
//! request's HTTP version), `/hello/{name}` (a path parameter), and `POST /echo`
//! (the body back, at most axum's default 2 MB). SIGINT or SIGTERM stops it.

#[path = "shard_common/mod.rs"]
mod common;

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::Version;
use axum::routing::{get, post};
use axum::Router;
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use shardloop::hyper::{LoopExecutor, LoopTimer};
use shardloop::net::TcpStream;

/// An HTTP/1.1 keep-alive connection with no new request for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// HTTP/2 streams one connection may have open at once.
const MAX_STREAMS: u32 = 128;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (args, []) = common::Args::parse("axum_server", []);
    // One router for all: it is `Send + Sync`, and each connection serves a clone.
    let router = router();
    common::serve(&args, "http/1.1 and h2c", move |stream| {
        serve_connection(router.clone(), stream)
    })
}

fn router() -> Router {
    Router::new()
        .route("/", get(|| async { "Hello, World!" }))
        .route(
            "/shard",
            get(|| async { format!("shard {}", common::shard()) }),
        )
        .route(
            "/version",
            get(|version: Version| async move { format!("{version:?}") }),
        )
        .route(
            "/hello/{name}",
            get(|Path(name): Path<String>| async move { format!("hello, {name}") }),
        )
        .route("/echo", post(|body: Bytes| async move { body }))
}

/// One connection, HTTP/1.1 or HTTP/2 (told apart by its first bytes).
async fn serve_connection(router: Router, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut builder = auto::Builder::new(LoopExecutor);
    builder
        .http1()
        .timer(LoopTimer)
        .header_read_timeout(IDLE_TIMEOUT);
    builder
        .http2()
        .timer(LoopTimer)
        .max_concurrent_streams(MAX_STREAMS);
    // The tower service as a hyper one (hyper-util's `service` feature).
    let service = TowerToHyperService::new(router);
    // Errors here are one client's (a reset, a protocol error): the connection
    // ends, the server goes on.
    let _ = builder.serve_connection(stream, service).await;
}
