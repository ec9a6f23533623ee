//! asyncio's streams on the loop: [`open_connection`] and [`start_server`] give a
//! [`StreamReader`] and a [`StreamWriter`] per connection, over TCP or (with
//! [`open_unix_connection`] and [`start_unix_server`]) Unix-domain sockets.
//!
//! - The reader buffers: [`readline`](StreamReader::readline),
//!   [`readuntil`](StreamReader::readuntil), [`readexactly`](StreamReader::readexactly),
//!   [`read`](StreamReader::read), [`read_to_eof`](StreamReader::read_to_eof). A
//!   `limit` ([`DEFAULT_LIMIT`], 64 KiB) bounds what `readline` and `readuntil`
//!   search, so a peer cannot make them buffer without end
//!   (`Err(Error::LimitOverrun { .. })`); a stream that ends early gives
//!   `Err(Error::IncompleteRead { partial, .. })` with the bytes that came.
//! - The writer never blocks a write: what the socket does not take is buffered and
//!   sent in the background; [`drain`](StreamWriter::drain) waits while the buffer
//!   is above its high-water mark (asyncio's flow control).
//! - A server runs its handler in a task per connection; a handler that panics or
//!   fails is reported to the loop's exception handler and the server serves on.
//!
//! Everything is loop-local (`!Send`): a connection belongs to the loop that
//! accepted or opened it. The reader and the writer of a connection may be used
//! from different tasks of that loop.
//!
//! ```
//! use shardloop::streams;
//! shardloop::run(async {
//!     // An echo server: one line back per line in.
//!     let server = streams::start_server("127.0.0.1:0", |mut r, mut w| async move {
//!         loop {
//!             let line = r.readline().await?;
//!             if line.is_empty() {
//!                 return Ok::<_, shardloop::Error>(()); // the client is done
//!             }
//!             w.write(&line);
//!             w.drain().await?;
//!         }
//!     })
//!     .await?;
//!
//!     let (mut r, mut w) = streams::open_connection(server.local_addr()).await?;
//!     w.write(b"PING\r\n");
//!     w.drain().await?;
//!     assert_eq!(r.readline().await?, b"PING\r\n");
//!     w.close();
//!     w.wait_closed().await?;
//!     server.close();
//!     Ok::<_, shardloop::Error>(())
//! })??;
//! # Ok::<(), shardloop::Error>(())
//! ```

mod reader;
mod server;
mod socket;
mod writer;

use std::cell::Cell;
use std::future::Future;
use std::path::Path;
use std::rc::Rc;

pub use reader::StreamReader;
pub use server::{HandlerOutput, Server};
pub use socket::StreamSocket;
use socket::sealed::Owner;
pub use writer::{StreamWriter, DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER};

use crate::net::{resolve, TcpListener, TcpStream, ToSocketAddrs, UnixListener, UnixStream};
use crate::{Error, EventLoop, Task};

/// The default limit of a [`StreamReader`] (asyncio's: 64 KiB).
pub const DEFAULT_LIMIT: usize = 64 * 1024;

/// Connects to `addr` over TCP (asyncio's `open_connection`), with `TCP_NODELAY`
/// set as asyncio sets it. A host name is resolved on the loop's executor, as
/// [`TcpStream::connect`] does, so the loop keeps running meanwhile.
pub async fn open_connection(
    addr: impl crate::net::ToSocketAddrs,
) -> Result<(StreamReader, StreamWriter), Error> {
    Ok(from_socket(TcpStream::connect(addr).await?))
}

/// Connects to the Unix-domain socket file `path` (asyncio's
/// `open_unix_connection`).
///
/// ```
/// use shardloop::streams;
/// let dir = std::env::temp_dir().join(format!("shardloop-streams-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let path = dir.join("sock");
/// let _ = std::fs::remove_file(&path);
/// shardloop::run(async {
///     let _server = streams::start_unix_server(&path, |mut r, mut w| async move {
///         let n = r.readexactly(3).await?;
///         w.write(&n);
///         w.drain().await
///     })
///     .await?;
///     let (mut r, mut w) = streams::open_unix_connection(&path).await?;
///     w.write(b"abc");
///     assert_eq!(r.readexactly(3).await?, b"abc");
///     Ok::<_, shardloop::Error>(())
/// })??;
/// std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub async fn open_unix_connection(
    path: impl AsRef<Path>,
) -> Result<(StreamReader<UnixStream>, StreamWriter<UnixStream>), Error> {
    Ok(from_socket(UnixStream::connect(path).await?))
}

/// Binds `addr` and serves it (asyncio's `start_server`): each connection runs
/// `handler(reader, writer)` in a task of its own. See [`Server`]. A host name is
/// resolved on the loop's executor, as [`lookup_host`](crate::net::lookup_host)
/// does (it never blocks the loop); the first of its addresses that binds is served.
pub async fn start_server<F, Fut>(addr: impl ToSocketAddrs, handler: F) -> Result<Server, Error>
where
    F: Fn(StreamReader, StreamWriter) -> Fut + 'static,
    Fut: Future + 'static,
    Fut::Output: HandlerOutput,
{
    let listener = TcpListener::bind(&resolve(&addr).await?.collect::<Vec<_>>()[..])?;
    let addr = listener.local_addr()?;
    Server::start(listener, addr, handler)
}

/// Binds the Unix-domain socket file `path` (which must not exist) and serves it,
/// as [`start_server`] does (asyncio's `start_unix_server`). The file is not removed
/// when the server closes.
pub async fn start_unix_server<F, Fut>(
    path: impl AsRef<Path>,
    handler: F,
) -> Result<Server<UnixStream>, Error>
where
    F: Fn(StreamReader<UnixStream>, StreamWriter<UnixStream>) -> Fut + 'static,
    Fut: Future + 'static,
    Fut::Output: HandlerOutput,
{
    let listener = UnixListener::bind(path)?;
    let addr = listener.local_addr()?;
    Server::start(listener, addr, handler)
}

/// The reader and the writer of a socket connected by other means (accepted by
/// hand, handed over by a [`Dispatcher`](crate::net::Dispatcher), one end of
/// [`UnixStream::pair`]). On TCP it sets `TCP_NODELAY`, as asyncio does.
///
/// ```
/// use shardloop::net::UnixStream;
/// shardloop::run(async {
///     let (a, b) = UnixStream::pair()?;
///     let (_ra, mut wa) = shardloop::streams::from_socket(a);
///     let (mut rb, _wb) = shardloop::streams::from_socket(b);
///     wa.write(b"over a pair\n");
///     assert_eq!(rb.readline().await?, b"over a pair\n");
///     Ok::<_, shardloop::Error>(())
/// })??;
/// # Ok::<(), shardloop::Error>(())
/// ```
pub fn from_socket<S: StreamSocket>(socket: S) -> (StreamReader<S>, StreamWriter<S>) {
    socket.configure();
    let conn = Rc::new(Connection {
        socket,
        closed: Cell::new(false),
    });
    (StreamReader::new(conn.clone()), StreamWriter::new(conn))
}

/// The socket that a reader and a writer share, and whether the writer closed it:
/// from then on the reader reads nothing more from the socket, only what it had
/// buffered (asyncio's reader gets end-of-stream when its transport closes).
struct Connection<S> {
    socket: S,
    closed: Cell<bool>,
}

/// `create_task` on the loop `lp`, if it is still there; the task is detached.
fn spawn_on<F: Future + 'static>(lp: &Owner, fut: F) -> Result<(), Error> {
    let inner = lp.0.upgrade().ok_or(Error::Closed)?;
    let task: Task<F::Output> = EventLoop { inner }.create_task(fut)?;
    task.detach();
    Ok(())
}
