//! Async sockets on the loop: TCP, UDP and Unix-domain.
//!
//! Every socket registers with the current thread's loop when it is made (the running
//! loop, else the one set with [`set_event_loop`](crate::set_event_loop)); where
//! there is none, creating it fails with an `io::Error` of kind `Other` that says
//! so. Its registration is released when it is dropped. Once its loop is closed,
//! its operations fail instead of waiting forever.
//!
//! Streams implement [`futures_io::AsyncRead`] and [`futures_io::AsyncWrite`], so the
//! `AsyncReadExt` / `AsyncWriteExt` helpers of futures-util or futures-lite work on
//! them. Listeners that run out of file descriptors back off and keep serving.
//!
//! Host names never block the loop: [`TcpStream::connect`], [`UdpSocket::connect`]
//! and [`UdpSocket::send_to`] take a [`ToSocketAddrs`] (std's argument types) and
//! look names up with [`lookup_host`], on the loop's executor; numeric addresses are
//! used at once. `bind`, synchronous like std's, takes std's trait.
//!
//! With the cargo feature `tokio-io`, the streams (and a TCP stream's owned halves)
//! implement `tokio::io::AsyncRead` and `tokio::io::AsyncWrite` as well, so crates
//! written against tokio's io traits (tokio-util codecs, tokio-rustls,
//! tokio-tungstenite) run on them, on a loop, without tokio's runtime. What still
//! needs tokio's reactor: `docs/ecosystem.md`. Note that the streams' own
//! `shutdown(how)` takes precedence over `tokio::io::AsyncWriteExt::shutdown()`:
//! call that one as `AsyncWriteExt::shutdown(&mut stream)`.
//!
//! ```
//! # #[cfg(feature = "tokio-io")] {
//! use futures_util::{SinkExt, StreamExt};
//! use shardloop::net::{TcpListener, TcpStream};
//! use tokio_util::codec::{Framed, LinesCodec};
//!
//! // tokio-util's line codec on a shardloop loop; no tokio runtime anywhere.
//! shardloop::run(async {
//!     let listener = TcpListener::bind("127.0.0.1:0")?;
//!     let client = TcpStream::connect(listener.local_addr()?).await?;
//!     let (server, _) = listener.accept().await?;
//!     let mut server = Framed::new(server, LinesCodec::new());
//!     let mut client = Framed::new(client, LinesCodec::new());
//!     client.send("ping").await?;
//!     let line = server.next().await.unwrap()?;
//!     assert_eq!(line, "ping");
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })??;
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ```
//! use futures_util::{AsyncReadExt, AsyncWriteExt};
//! use shardloop::net::{TcpListener, TcpStream};
//!
//! shardloop::run(async {
//!     let listener = TcpListener::bind("127.0.0.1:0")?;
//!     let addr = listener.local_addr()?;
//!     let server = shardloop::spawn(async move {
//!         let (mut conn, _peer) = listener.accept().await?;
//!         let mut buf = [0u8; 4];
//!         conn.read_exact(&mut buf).await?;
//!         conn.write_all(&buf).await?;
//!         std::io::Result::Ok(())
//!     });
//!     let mut client = TcpStream::connect(addr).await?;
//!     client.write_all(b"ping").await?;
//!     let mut reply = [0u8; 4];
//!     client.read_exact(&mut reply).await?;
//!     assert_eq!(&reply, b"ping");
//!     server.await.unwrap()?;
//!     std::io::Result::Ok(())
//! })??;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod dispatch;
mod lookup;
mod server_socket;
mod tcp;
#[cfg(feature = "tokio-io")]
mod tokio_io;
mod udp;
mod unix;

pub use dispatch::{Dispatcher, Placement};
pub(crate) use lookup::resolve;
pub use lookup::{lookup_host, ToSocketAddrs};
pub(crate) use server_socket::{server_closed, ListenAddr, Listening};
pub use server_socket::ServerSocket;
pub use tcp::{OwnedReadHalf, OwnedWriteHalf, ReuniteError, TcpListener, TcpStream};
pub use udp::UdpSocket;
pub use unix::{UnixListener, UnixStream};

use std::cell::Cell;
use std::future::poll_fn;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::task::{Context, Poll};
use std::time::Duration;

use mio::event::Source;

use crate::io::reactor::Direction;
use crate::io::registration::Registered;

/// How long `accept` waits before trying again when the process is out of file
/// descriptors (or the kernel out of memory for sockets).
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

// The stream operations below stop asking once a read or write comes back short
// (`Registered::drained`): a short count means the socket buffer is empty (or full),
// so the next call would only return `WouldBlock`. That saves one syscall per message.

pub(crate) fn poll_read<S: Source>(
    io: &Registered<S>,
    cx: &mut Context<'_>,
    buf: &mut [u8],
) -> Poll<io::Result<usize>>
where
    for<'a> &'a S: Read,
{
    let want = buf.len();
    if let Some(r) = io.poll_read_ring(cx, want, |bytes| copy_into(buf, bytes)) {
        return r;
    }
    let r = io.poll_io(Direction::Read, cx, |mut s| s.read(buf));
    note_short(io, Direction::Read, r, want)
}

/// Copies what fits of `bytes` into `buf`; how much.
fn copy_into(buf: &mut [u8], bytes: &[u8]) -> usize {
    let n = bytes.len().min(buf.len());
    buf[..n].copy_from_slice(&bytes[..n]);
    n
}

pub(crate) fn poll_read_vectored<S: Source>(
    io: &Registered<S>,
    cx: &mut Context<'_>,
    bufs: &mut [IoSliceMut<'_>],
) -> Poll<io::Result<usize>>
where
    for<'a> &'a S: Read,
{
    if io.reads_by_ring() {
        // What the ring received is in one buffer already: fill the first slice.
        let first = bufs.iter_mut().find(|b| !b.is_empty());
        return match first {
            Some(b) => poll_read(io, cx, b),
            None => poll_read(io, cx, &mut []),
        };
    }
    let want = bufs.iter().map(|b| b.len()).sum();
    let r = io.poll_io(Direction::Read, cx, |mut s| s.read_vectored(bufs));
    note_short(io, Direction::Read, r, want)
}

pub(crate) fn poll_write<S: Source>(
    io: &Registered<S>,
    cx: &mut Context<'_>,
    buf: &[u8],
) -> Poll<io::Result<usize>>
where
    for<'a> &'a S: Write,
{
    if let Some(r) = io.poll_write_ring(cx, &[IoSlice::new(buf)]) {
        return r;
    }
    let r = io.poll_io(Direction::Write, cx, |mut s| s.write(buf));
    note_short(io, Direction::Write, r, buf.len())
}

pub(crate) fn poll_write_vectored<S: Source>(
    io: &Registered<S>,
    cx: &mut Context<'_>,
    bufs: &[IoSlice<'_>],
) -> Poll<io::Result<usize>>
where
    for<'a> &'a S: Write,
{
    if let Some(r) = io.poll_write_ring(cx, bufs) {
        return r;
    }
    let want = bufs.iter().map(|b| b.len()).sum();
    let r = io.poll_io(Direction::Write, cx, |mut s| s.write_vectored(bufs));
    note_short(io, Direction::Write, r, want)
}

/// One write, now, from outside any task: what the socket takes without waiting
/// (`WouldBlock` when it takes nothing). For a caller that buffers the rest.
pub(crate) fn try_write<S: Source>(io: &Registered<S>, buf: &[u8]) -> io::Result<usize>
where
    for<'a> &'a S: Write,
{
    if !io.ring_writes_done() {
        // A ring send of the stream's is in the kernel: a write now would go ahead
        // of its bytes. The caller buffers, and its flusher waits for the send.
        return Err(io::ErrorKind::WouldBlock.into());
    }
    let n = io.try_io(Direction::Write, |mut s| s.write(buf))?;
    if n > 0 && n < buf.len() {
        io.drained(Direction::Write);
    }
    Ok(n)
}

fn note_short<S: Source>(
    io: &Registered<S>,
    dir: Direction,
    r: Poll<io::Result<usize>>,
    want: usize,
) -> Poll<io::Result<usize>> {
    if let Poll::Ready(Ok(n)) = &r {
        if *n > 0 && *n < want {
            io.drained(dir);
        }
    }
    r
}

/// `AsyncWrite::poll_close` for a stream, once the writes the ring still sends are
/// out: shut the write side down. A socket that is no longer connected has no write
/// side left to close, which is what was asked.
pub(crate) fn shutdown_write<S: Source + AsRawFd>(
    io: &Registered<S>,
    shut: impl FnOnce() -> io::Result<()>,
) -> Poll<io::Result<()>> {
    // Shut down here already: again could cut short the send that the earlier
    // shutdown's task waits for.
    if io.write_shut() {
        return Poll::Ready(Ok(()));
    }
    let result = shut();
    if result.is_ok() {
        io.note_write_shut();
    }
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Poll::Ready(Ok(())),
        other => Poll::Ready(other),
    }
}

/// Implements `futures_io::AsyncRead` for `$ty`, whose registration `$io` names
/// (with `$s` bound to `&Self`).
macro_rules! impl_async_read {
    (&$ty:ident, |$s:ident| $io:expr) => {
        $crate::net::impl_async_read!(@impl ['a] &'a $ty, |$s| $io);
    };
    ($ty:ident, |$s:ident| $io:expr) => {
        $crate::net::impl_async_read!(@impl [] $ty, |$s| $io);
    };
    (@impl [$($lt:lifetime)?] $ty:ty, |$s:ident| $io:expr) => {
        impl<$($lt)?> futures_io::AsyncRead for $ty {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &mut [u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                let $s = &*self;
                $crate::net::poll_read($io, cx, buf)
            }

            fn poll_read_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &mut [std::io::IoSliceMut<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                let $s = &*self;
                $crate::net::poll_read_vectored($io, cx, bufs)
            }
        }
    };
}

/// Implements `futures_io::AsyncWrite` for `$ty`; `poll_close` shuts the write side
/// down (a half-close: the peer reads end-of-stream, reading still works) once the
/// writes are out, unless a `close: |this| expr` says otherwise (`this` is the
/// `Pin<&mut Self>`; a pipe has no half-close, it closes).
macro_rules! impl_async_write {
    (&$ty:ident, |$s:ident| $io:expr) => {
        $crate::net::impl_async_write!(@impl ['a] &'a $ty, |$s| $io, |this, cx| {
            let $s = &*this;
            std::task::ready!(($io).poll_flush_ring(cx))?;
            $crate::net::shutdown_write($io, || ($io).get_ref().shutdown(std::net::Shutdown::Write))
        });
    };
    ($ty:ident, |$s:ident| $io:expr) => {
        $crate::net::impl_async_write!(@impl [] $ty, |$s| $io, |this, cx| {
            let $s = &*this;
            std::task::ready!(($io).poll_flush_ring(cx))?;
            $crate::net::shutdown_write($io, || ($io).get_ref().shutdown(std::net::Shutdown::Write))
        });
    };
    ($ty:ident, |$s:ident| $io:expr, close: |$this:ident| $close:expr) => {
        $crate::net::impl_async_write!(@impl [] $ty, |$s| $io, |$this, _cx| $close);
    };
    (@impl [$($lt:lifetime)?] $ty:ty, |$s:ident| $io:expr, |$this:ident, $cx:ident| $close:expr) => {
        impl<$($lt)?> futures_io::AsyncWrite for $ty {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                let $s = &*self;
                $crate::net::poll_write($io, cx, buf)
            }

            fn poll_write_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                let $s = &*self;
                $crate::net::poll_write_vectored($io, cx, bufs)
            }

            /// Waits for a write that the ring still sends (a proactor loop's; on
            /// an epoll loop nothing is buffered in user space, and this is done at
            /// once). A closed write end has nothing left to flush.
            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                let $s = &*self;
                // `$io` may return early with `?` (a closed pipe): caught here.
                #[allow(clippy::redundant_closure_call)]
                let io = (move || -> std::io::Result<_> { Ok($io) })();
                match io {
                    Ok(io) => io.poll_flush_ring(cx),
                    Err(_) => std::task::Poll::Ready(Ok(())),
                }
            }

            fn poll_close(
                self: std::pin::Pin<&mut Self>,
                $cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                let $this = self;
                $close
            }
        }
    };
}

/// The owned-buffer calls of a stream type (`read` and/or `write`), on the
/// registration `$io` names (with `$s` bound to `&self`).
macro_rules! impl_owned_io {
    ($ty:ty, |$s:ident| $io:expr, read) => {
        impl $ty {
            /// Reads into `buf`'s spare capacity (at most `buf.capacity() - buf.len()`
            /// bytes, appended) and gives the buffer back with the count; `Ok(0)` is
            /// the end of the stream, or a buffer with no spare capacity.
            ///
            /// On a proactor loop the kernel receives straight into `buf`, with no
            /// copy (what tokio-uring and monoio call an owned-buffer read). A stream
            /// also read through `AsyncRead` keeps a receive of its own in flight
            /// (read-ahead, into the loop's buffers): its `read_owned` calls then
            /// take from that receive, copied into `buf`. On an epoll loop it is a
            /// `recv(2)` into it. Dropping the future before it
            /// completes loses no byte: a receive already in the kernel finishes into
            /// the stream, whose next read hands its bytes out.
            ///
            /// ```
            /// use futures_util::AsyncWriteExt;
            /// use shardloop::net::UnixStream;
            ///
            /// shardloop::run(async {
            ///     let (a, mut b) = UnixStream::pair()?;
            ///     b.write_all(b"hello").await?;
            ///     let (n, buf) = a.read_owned(Vec::with_capacity(64)).await;
            ///     assert_eq!(n?, 5);
            ///     assert_eq!(buf, b"hello");
            ///     std::io::Result::Ok(())
            /// })??;
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub async fn read_owned(&self, buf: Vec<u8>) -> (std::io::Result<usize>, Vec<u8>) {
                let $s = self;
                $crate::io::owned::ReadOwned::new($io, buf).await
            }
        }
    };
    ($ty:ty, |$s:ident| $io:expr, write) => {
        impl $ty {
            /// Writes all of `buf` and gives it back.
            ///
            /// On a proactor loop the kernel sends straight from `buf` (one send
            /// operation, which the kernel itself repeats until every byte is out);
            /// on an epoll loop it is `send(2)` until done. Dropping the future before
            /// it completes cancels the send: an unknown prefix of `buf` may have been
            /// written, as with any write dropped half-way, and the buffer is freed
            /// only once the kernel is done with it.
            ///
            /// ```
            /// use futures_util::AsyncReadExt;
            /// use shardloop::net::UnixStream;
            ///
            /// shardloop::run(async {
            ///     let (a, mut b) = UnixStream::pair()?;
            ///     let (sent, buf) = a.write_all_owned(b"ping".to_vec()).await;
            ///     sent?;
            ///     assert_eq!(buf, b"ping");
            ///     let mut got = [0u8; 4];
            ///     b.read_exact(&mut got).await?;
            ///     assert_eq!(&got, b"ping");
            ///     std::io::Result::Ok(())
            /// })??;
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub async fn write_all_owned(&self, buf: Vec<u8>) -> (std::io::Result<()>, Vec<u8>) {
                let $s = self;
                $crate::io::owned::WriteAllOwned::new($io, buf).await
            }
        }
    };
}

pub(crate) use {impl_async_read, impl_async_write, impl_owned_io};

/// Whether a failed `accept` means "out of descriptors or memory": worth waiting for,
/// never worth giving up on.
pub(crate) fn out_of_resources(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Whether a failed `accept` concerns only the one connection that went away before
/// it was accepted: skip it and accept the next.
pub(crate) fn connection_gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ECONNABORTED | libc::EPROTO))
}

/// The error for an accepted connection whose peer address cannot be read: it
/// went away already (`ENOTCONN`), which the accept loop skips, as it skips one
/// that died in the backlog.
pub(crate) fn peer_gone(e: io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(libc::ENOTCONN) => io::Error::from_raw_os_error(libc::ECONNABORTED),
        _ => e,
    }
}

/// A listener's accept loop: waits for a connection, skipping connections that died
/// in the backlog, and backing off while the process is out of file descriptors. The
/// backoff is logged once per episode (a warning when it starts, a note when it ends);
/// the pending connections stay in the kernel's backlog meanwhile.
pub(crate) async fn accept_with_backoff<T>(
    starved: &Cell<bool>,
    describe: impl Fn() -> String,
    mut poll_accept: impl FnMut(&mut Context<'_>) -> Poll<io::Result<T>>,
) -> io::Result<T> {
    loop {
        match poll_fn(&mut poll_accept).await {
            Ok(accepted) => {
                if starved.replace(false) {
                    log::info!("{}: accepting connections again", describe());
                }
                return Ok(accepted);
            }
            Err(e) if out_of_resources(&e) => {
                if !starved.replace(true) {
                    log::warn!(
                        "{}: accept failed: {e}; retrying every {} ms until descriptors are freed",
                        describe(),
                        ACCEPT_BACKOFF.as_millis()
                    );
                }
                crate::time::sleep(ACCEPT_BACKOFF).await;
            }
            Err(e) if connection_gone(&e) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Tries `f` on each of `addrs` until one works; the last error otherwise.
pub(crate) fn each_addr<T>(
    addrs: impl IntoIterator<Item = SocketAddr>,
    mut f: impl FnMut(SocketAddr) -> io::Result<T>,
) -> io::Result<T> {
    let mut last = None;
    for a in addrs {
        match f(a) {
            Ok(v) => return Ok(v),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(no_addresses))
}

pub(crate) fn no_addresses() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "the address did not resolve to any socket address",
    )
}
