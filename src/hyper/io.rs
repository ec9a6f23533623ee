//! `hyper::rt::Read` / `hyper::rt::Write` for shardloop's streams, and
//! [`FuturesIo`] for any other `futures_io` stream.
//!
//! shardloop's own [`TcpStream`] and [`UnixStream`] implement hyper's traits
//! directly: they read straight into hyper's uninitialized buffer with `recv(2)`
//! (on a proactor loop, from the buffer the ring received into), so no byte of it
//! is zeroed first. Any other stream (a TLS stream, a test double)
//! goes through [`FuturesIo`], which has to initialize the buffer before handing it
//! to `AsyncRead::poll_read`.

use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use ::hyper::rt::{Read, ReadBufCursor, Write};
use futures_io::{AsyncRead, AsyncWrite};
use mio::event::Source;

use crate::io::reactor::Direction;
use crate::io::registration::Registered;
use crate::net::{TcpStream, UnixStream};

/// Reads from `io` into the unfilled part of `buf` without initializing it first.
fn poll_read_uninit<S: Source + AsRawFd>(
    io: &Registered<S>,
    cx: &mut Context<'_>,
    mut buf: ReadBufCursor<'_>,
) -> Poll<io::Result<()>> {
    let room = buf.remaining();
    let ring = io.poll_read_ring(cx, room, |bytes| {
        let n = bytes.len().min(room);
        buf.put_slice(&bytes[..n]);
        n
    });
    if let Some(r) = ring {
        return r.map_ok(|_| ());
    }
    // SAFETY: the slice is only written to, by the kernel, below; nothing reads it
    // and nothing de-initializes a byte of it.
    let dst = unsafe { buf.as_mut() };
    let want = dst.len();
    let r = io.poll_io(Direction::Read, cx, |s| {
        // `recv(2)` rather than `read(2)`: same bytes, without the VFS layer's detour
        // (what std's and tokio's socket reads use too).
        // SAFETY: `dst` is valid for writes of `want` bytes for the whole call, and
        // `recv(2)` writes at most `want` bytes into it, never reading it.
        let n = unsafe { libc::recv(s.as_raw_fd(), dst.as_mut_ptr().cast(), want, 0) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    });
    match r {
        Poll::Ready(Ok(n)) => {
            // A short read emptied the socket buffer: the next read would only say
            // WouldBlock, so skip it and wait for readiness (as the AsyncRead impls do).
            if n > 0 && n < want {
                io.drained(Direction::Read);
            }
            // SAFETY: `recv(2)` initialized the first `n` bytes of the unfilled part.
            unsafe { buf.advance(n) };
            Poll::Ready(Ok(()))
        }
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    }
}

/// `hyper::rt::Read` and `hyper::rt::Write` for a shardloop stream type; writes go
/// through its `futures_io::AsyncWrite` impl.
macro_rules! impl_hyper_io {
    ($ty:ty) => {
        impl Read for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: ReadBufCursor<'_>,
            ) -> Poll<io::Result<()>> {
                poll_read_uninit(&self.io, cx, buf)
            }
        }

        impl Write for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                AsyncWrite::poll_write(self, cx, buf)
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                AsyncWrite::poll_write_vectored(self, cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                true
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                AsyncWrite::poll_flush(self, cx)
            }

            /// Shuts the write side down (the peer reads end-of-stream).
            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                AsyncWrite::poll_close(self, cx)
            }
        }
    };
}

impl_hyper_io!(TcpStream);
impl_hyper_io!(UnixStream);

/// Adapts any `futures_io` stream (`AsyncRead + AsyncWrite`) to hyper's
/// `hyper::rt::Read` + `hyper::rt::Write`.
///
/// shardloop's [`TcpStream`] and [`UnixStream`] need no wrapper: they implement
/// hyper's traits themselves, and faster (no buffer zeroing). Use this for other
/// streams, such as a TLS stream layered over a `TcpStream`.
///
/// ```
/// use shardloop::hyper::FuturesIo;
/// use shardloop::net::{TcpListener, TcpStream};
/// shardloop::run(async {
///     let listener = TcpListener::bind("127.0.0.1:0")?;
///     let addr = listener.local_addr()?;
///     let _client = shardloop::spawn(async move { TcpStream::connect(addr).await });
///     let (conn, _) = listener.accept().await?;
///     let io = FuturesIo::new(conn); // hyper::rt::Read + Write
///     assert!(io.get_ref().peer_addr().is_ok());
///     std::io::Result::Ok(())
/// })??;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct FuturesIo<T> {
    inner: T,
}

impl<T> FuturesIo<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Self {
        FuturesIo { inner }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// The wrapped stream, mutably.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// Unwraps the stream.
    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T: AsyncRead + Unpin> Read for FuturesIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // `AsyncRead` takes `&mut [u8]`, which must be initialized: zero it (only the
        // part not yet initialized, which the cursor tracks).
        let dst = buf.initialize_unfilled();
        match Pin::new(&mut this.inner).poll_read(cx, dst) {
            Poll::Ready(Ok(n)) => {
                // SAFETY: the whole unfilled part was initialized above, and the
                // reader reports `n` bytes of it filled (at most its length).
                unsafe { buf.advance(n) };
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> Write for FuturesIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}
