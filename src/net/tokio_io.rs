//! `tokio::io::AsyncRead` and `tokio::io::AsyncWrite` for shardloop's streams and a
//! child process's pipes (cargo feature `tokio-io`), so that code written against tokio's io traits (tokio-util's
//! codecs, tokio-rustls, tokio-tungstenite, hyper-util's `TokioIo`) runs on a loop
//! with no tokio runtime anywhere: those traits are plain poll functions, and a
//! stream's wakeups come from its own loop.
//!
//! Each impl forwards to the stream's `futures_io` impl, so both families behave
//! the same (`poll_shutdown` is `poll_close`: a half-close). The one difference is
//! the read buffer: tokio's `ReadBuf` may be uninitialized, and a `futures_io` read
//! takes initialized bytes, so the part of it not yet initialized is zeroed first
//! (once per buffer: `ReadBuf` remembers what is initialized).
//!
//! `AsyncBufRead` does not apply to the streams themselves (they hold no buffer):
//! wrap one in `tokio::io::BufReader` (tokio's `io-util` feature, which needs no
//! runtime either). See `docs/ecosystem.md` for what still needs tokio's reactor.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::ReadBuf;

use super::{OwnedReadHalf, OwnedWriteHalf, TcpStream, UnixStream};
use crate::process::{ChildStderr, ChildStdin, ChildStdout};

fn poll_read<R: futures_io::AsyncRead>(
    reader: Pin<&mut R>,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    let n = ready!(reader.poll_read(cx, buf.initialize_unfilled()))?;
    buf.advance(n);
    Poll::Ready(Ok(()))
}

/// `tokio::io::AsyncRead` for types that implement `futures_io::AsyncRead`.
macro_rules! impl_tokio_read {
    ($($ty:ty),* $(,)?) => {$(
        /// Reads through the `futures_io::AsyncRead` impl (feature `tokio-io`).
        #[cfg_attr(docsrs, doc(cfg(feature = "tokio-io")))]
        impl tokio::io::AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                poll_read(self, cx, buf)
            }
        }
    )*};
}

/// `tokio::io::AsyncWrite` for types that implement `futures_io::AsyncWrite`.
macro_rules! impl_tokio_write {
    ($($ty:ty),* $(,)?) => {$(
        /// Writes through the `futures_io::AsyncWrite` impl (feature `tokio-io`);
        /// `poll_shutdown` shuts the write side down (the peer reads end-of-stream).
        #[cfg_attr(docsrs, doc(cfg(feature = "tokio-io")))]
        impl tokio::io::AsyncWrite for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                futures_io::AsyncWrite::poll_write(self, cx, buf)
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                futures_io::AsyncWrite::poll_write_vectored(self, cx, bufs)
            }

            /// `writev(2)` underneath: tokio-util and hyper-util hand whole frames.
            fn is_write_vectored(&self) -> bool {
                true
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                futures_io::AsyncWrite::poll_flush(self, cx)
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                futures_io::AsyncWrite::poll_close(self, cx)
            }
        }
    )*};
}

impl_tokio_read!(
    TcpStream,
    &TcpStream,
    OwnedReadHalf,
    UnixStream,
    &UnixStream,
    ChildStdout,
    ChildStderr
);
impl_tokio_write!(
    TcpStream,
    &TcpStream,
    OwnedWriteHalf,
    UnixStream,
    &UnixStream,
    ChildStdin
);
