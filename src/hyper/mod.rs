//! hyper 1.x on shardloop (cargo feature `hyper`): any hyper service runs on a loop,
//! one connection per task, and so on every shard of a [`Runtime`](crate::Runtime)
//! with one listener per shard (`examples/http_server.rs` does that, with graceful
//! shutdown on SIGINT/SIGTERM).
//!
//! What hyper asks of a runtime, and what answers it here:
//! - `hyper::rt::Read` + `hyper::rt::Write`: implemented by
//!   [`net::TcpStream`](crate::net::TcpStream) and
//!   [`net::UnixStream`](crate::net::UnixStream) themselves; [`FuturesIo`] adapts
//!   any other `futures_io` stream.
//! - `hyper::rt::Timer`: [`LoopTimer`] (its sleeps are `Send + Sync`, as hyper
//!   requires, yet arm plain loop timers: see [`LoopSleep`]).
//! - `hyper::rt::Executor`: [`LoopExecutor`], which spawns `!Send` futures on the
//!   running loop.
//!
//! [`http1()`] is hyper's HTTP/1 server builder with the timer set, [`serve_connection`]
//! serves one connection with it, and [`graceful`] shuts a connection down when a
//! signal comes. With the cargo feature `http2`, [`http2()`] is hyper's HTTP/2 server
//! builder with the executor (each HTTP/2 stream is a task on the loop) and the timer
//! set.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Empty, Full};
//! use hyper::{body::Incoming, service::service_fn, Request, Response};
//! use shardloop::net::{TcpListener, TcpStream};
//!
//! shardloop::run(async {
//!     let listener = TcpListener::bind("127.0.0.1:0")?;
//!     let addr = listener.local_addr()?;
//!     let _server = shardloop::spawn(async move {
//!         loop {
//!             let Ok((stream, _)) = listener.accept().await else { continue };
//!             let hello = service_fn(|_req: Request<Incoming>| async {
//!                 Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from("hi"))))
//!             });
//!             // One task per connection; dropping the `Task` detaches it.
//!             drop(shardloop::spawn(shardloop::hyper::serve_connection(stream, hello)));
//!         }
//!     });
//!
//!     // hyper's client works on shardloop too.
//!     let stream = TcpStream::connect(addr).await?;
//!     let (mut sender, conn) = hyper::client::conn::http1::handshake(stream).await?;
//!     drop(shardloop::spawn(conn));
//!     let req = Request::get("/").header("host", "localhost").body(Empty::<Bytes>::new())?;
//!     let resp = sender.send_request(req).await?;
//!     assert_eq!(resp.into_body().collect().await?.to_bytes(), "hi");
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })??;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod executor;
mod io;
mod timer;

pub use executor::LoopExecutor;
pub use io::FuturesIo;
pub use timer::{LoopSleep, LoopTimer};

use std::error::Error as StdError;
use std::future::Future;
use std::pin::pin;
use std::task::Poll;

use ::hyper::body::{Body, Incoming};
use ::hyper::rt::{Read, Write};
use ::hyper::server::conn::http1;
use ::hyper::service::HttpService;

/// hyper's HTTP/1 server builder with [`LoopTimer`] set, so its timeouts work.
///
/// hyper's defaults then apply, among them a 30 s `header_read_timeout`: a client
/// must send a request's headers within it, and an idle keep-alive connection is
/// closed when no new request starts within it. Set your own on the builder:
///
/// ```
/// use std::time::Duration;
/// let mut builder = shardloop::hyper::http1();
/// builder.header_read_timeout(Duration::from_secs(5)).max_buf_size(16 * 1024);
/// ```
pub fn http1() -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder.timer(LoopTimer);
    builder
}

/// hyper's HTTP/2 server builder with [`LoopExecutor`] (hyper runs each stream of a
/// connection as its own task: here, a task on the running loop, which may be
/// `!Send`) and [`LoopTimer`] (for its keep-alive pings and timeouts).
///
/// HTTP/2 needs either TLS with ALPN (`h2`) or a client that speaks it from the first
/// byte ("prior knowledge", as `curl --http2-prior-knowledge` and `h2load` do);
/// `examples/https_server.rs` and `examples/axum_server.rs` show both.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::{BodyExt, Empty, Full};
/// use hyper::{body::Incoming, service::service_fn, Request, Response};
/// use shardloop::net::UnixStream;
///
/// shardloop::run(async {
///     let (server_end, client_end) = UnixStream::pair()?;
///     let version = service_fn(|req: Request<Incoming>| async move {
///         let body = format!("{:?}", req.version());
///         Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(body))))
///     });
///     let conn = shardloop::hyper::http2().serve_connection(server_end, version);
///     drop(shardloop::spawn(conn));
///
///     // hyper's HTTP/2 client, with the same executor.
///     let (mut sender, conn) =
///         hyper::client::conn::http2::handshake(shardloop::hyper::LoopExecutor, client_end)
///             .await?;
///     drop(shardloop::spawn(conn));
///     let req = Request::get("http://localhost/").body(Empty::<Bytes>::new())?;
///     let resp = sender.send_request(req).await?;
///     assert_eq!(resp.into_body().collect().await?.to_bytes(), "HTTP/2.0");
///     Ok::<_, Box<dyn std::error::Error>>(())
/// })??;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[cfg(feature = "http2")]
#[cfg_attr(docsrs, doc(cfg(feature = "http2")))]
pub fn http2() -> ::hyper::server::conn::http2::Builder<LoopExecutor> {
    let mut builder = ::hyper::server::conn::http2::Builder::new(LoopExecutor);
    builder.timer(LoopTimer);
    builder
}

/// Serves HTTP/1 on one connection with `service`, with the [`http1()`] builder's
/// settings, until the client closes it (or a timeout or a protocol error does).
/// Spawn one per accepted connection: each runs as its own task, so a slow client
/// holds up no other.
///
/// See the [module](self) docs for an example.
pub async fn serve_connection<I, S>(io: I, service: S) -> Result<(), ::hyper::Error>
where
    I: Read + Write + Unpin,
    S: HttpService<Incoming>,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as Body>::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    http1().serve_connection(io, service).await
}

/// Drives `conn` to its end; once `stop` completes, asks it to shut down gracefully
/// first: a request in flight is still answered (with `connection: close`), then the
/// connection closes; an idle one closes at once.
///
/// ```
/// use std::{cell::Cell, convert::Infallible, rc::Rc};
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use hyper::{body::Incoming, service::service_fn, Request, Response};
/// use shardloop::net::{TcpListener, TcpStream};
///
/// shardloop::run(async {
///     let listener = TcpListener::bind("127.0.0.1:0")?;
///     let _client = TcpStream::connect(listener.local_addr()?).await?;
///     let (stream, _) = listener.accept().await?;
///     let svc = service_fn(|_: Request<Incoming>| async {
///         Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
///     });
///     let conn = shardloop::hyper::http1().serve_connection(stream, svc);
///     // Shut down at once: the connection is idle, so it just closes.
///     shardloop::hyper::graceful(conn, async {}).await?;
///     Ok::<_, Box<dyn std::error::Error>>(())
/// })??;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub async fn graceful<I, S>(
    conn: http1::Connection<I, S>,
    stop: impl Future<Output = ()>,
) -> Result<(), ::hyper::Error>
where
    I: Read + Write + Unpin,
    S: HttpService<Incoming>,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as Body>::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let mut conn = pin!(conn);
    let mut stop = pin!(stop);
    let mut stopping = false;
    std::future::poll_fn(|cx| {
        // The connection first: a finished connection needs no shutdown.
        if let Poll::Ready(r) = conn.as_mut().poll(cx) {
            return Poll::Ready(r);
        }
        if !stopping && stop.as_mut().poll(cx).is_ready() {
            stopping = true;
            conn.as_mut().graceful_shutdown();
            // Poll again: an idle connection finishes now.
            return conn.as_mut().poll(cx);
        }
        Poll::Pending
    })
    .await
}
