//! [`StreamSocket`]: the sockets that streams run over, TCP and Unix-domain.

use std::fmt;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Weak;
use std::task::{Context, Poll};

use crate::event_loop::LoopInner;
use crate::io::OpKey;
use crate::net::{ListenAddr, TcpListener, TcpStream, UnixListener, UnixStream};

/// A connected stream socket that a [`StreamReader`](super::StreamReader) and a
/// [`StreamWriter`](super::StreamWriter) run over: [`TcpStream`] or [`UnixStream`].
///
/// Sealed: the streams drive the loop's own sockets, without going through their
/// futures.
pub trait StreamSocket: sealed::Sealed + 'static {
    /// Its address type: `std::net::SocketAddr`, or a Unix-domain `SocketAddr`.
    type Addr: Clone + fmt::Debug;

    /// The remote address.
    fn peer_addr(&self) -> io::Result<Self::Addr>;

    /// The local address.
    fn local_addr(&self) -> io::Result<Self::Addr>;
}

pub(crate) mod sealed {
    use super::*;

    /// The loop a socket is registered with, held weakly (so that a connection kept
    /// in a task does not keep its loop alive).
    pub struct Owner(pub(crate) Weak<LoopInner>);

    /// What the streams need of a socket, beyond its addresses.
    pub trait Sealed: Sized {
        /// The listener that accepts such sockets.
        type Listener;

        /// Reads into `buf`, waiting for data.
        fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>>;

        /// Writes from `buf`, waiting for room.
        fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>>;

        /// Writes what the socket takes now, outside any task.
        fn try_write(&self, buf: &[u8]) -> io::Result<usize>;

        /// Whether a write now can be a ring send: on a proactor that receives its
        /// bytes through the ring, from its running loop.
        fn sends_by_ring_now(&self) -> bool;

        /// Queues a ring send of `buf[from..]`, done when all of it is out.
        fn start_ring_send(&self, buf: Vec<u8>, from: usize) -> Result<OpKey, (io::Error, Vec<u8>)>;

        /// How many bytes ring send `key` sent, and its buffer, once it completed.
        fn poll_ring_send(&self, key: OpKey, cx: &mut Context<'_>) -> Poll<(io::Result<usize>, Vec<u8>)>;

        /// Ring send `key`'s outcome if it completed, without waiting.
        fn take_ring_send(&self, key: OpKey) -> Option<(io::Result<usize>, Vec<u8>)>;

        /// Cancels ring send `key` in the kernel, waking the task that polled it.
        fn cancel_ring_send(&self, key: OpKey);

        /// Waits for the ring send that the socket's own `AsyncWrite` left in the
        /// kernel, if any (a writer's bytes go after it); the error of one that failed.
        fn poll_own_send(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

        /// Whether the socket's own `AsyncWrite` has no ring send in the kernel,
        /// collecting one that completed, without waiting.
        fn own_send_done(&self) -> bool;

        /// Shuts one or both directions down.
        fn shutdown(&self, how: Shutdown) -> io::Result<()>;

        /// The loop it is registered with (where its writer flushes).
        fn owner(&self) -> Owner;

        /// Sets it up as asyncio sets up a stream's socket (TCP: `TCP_NODELAY`).
        fn configure(&self);

        /// One accept on `listener`.
        fn poll_accept(listener: &Self::Listener, cx: &mut Context<'_>) -> Poll<io::Result<Self>>;

        /// `listener`'s descriptor.
        fn listener_fd(listener: &Self::Listener) -> RawFd;

        /// The address `listener` is bound to.
        fn listener_addr(listener: &Self::Listener) -> io::Result<ListenAddr>;
    }
}

/// Implements the traits for one of the loop's stream types.
macro_rules! stream_socket {
    ($ty:ident, $listener:ident, $addr:ty, |$s:ident| $configure:expr) => {
        impl sealed::Sealed for $ty {
            type Listener = $listener;

            fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
                crate::net::poll_read(&self.io, cx, buf)
            }

            fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
                crate::net::poll_write(&self.io, cx, buf)
            }

            fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
                crate::net::try_write(&self.io, buf)
            }

            fn sends_by_ring_now(&self) -> bool {
                self.io.sends_by_ring_now()
            }

            fn start_ring_send(&self, buf: Vec<u8>, from: usize) -> Result<OpKey, (io::Error, Vec<u8>)> {
                self.io.start_ring_send(buf, from)
            }

            fn poll_ring_send(&self, key: OpKey, cx: &mut Context<'_>) -> Poll<(io::Result<usize>, Vec<u8>)> {
                self.io.poll_ring_send(key, cx)
            }

            fn take_ring_send(&self, key: OpKey) -> Option<(io::Result<usize>, Vec<u8>)> {
                self.io.take_ring_send(key)
            }

            fn cancel_ring_send(&self, key: OpKey) {
                self.io.cancel_ring_send(key)
            }

            fn poll_own_send(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.io.poll_flush_ring(cx)
            }

            fn own_send_done(&self) -> bool {
                self.io.ring_writes_done()
            }

            fn shutdown(&self, how: Shutdown) -> io::Result<()> {
                $ty::shutdown(self, how)
            }

            fn owner(&self) -> sealed::Owner {
                sealed::Owner(self.io.owner().clone())
            }

            fn configure(&self) {
                let $s = self;
                $configure
            }

            fn poll_accept(listener: &$listener, cx: &mut Context<'_>) -> Poll<io::Result<Self>> {
                listener.poll_accept_stream(cx)
            }

            fn listener_fd(listener: &$listener) -> RawFd {
                listener.as_raw_fd()
            }

            fn listener_addr(listener: &$listener) -> io::Result<ListenAddr> {
                listener.local_addr().map(ListenAddr::from)
            }
        }

        impl StreamSocket for $ty {
            type Addr = $addr;

            fn peer_addr(&self) -> io::Result<$addr> {
                $ty::peer_addr(self)
            }

            fn local_addr(&self) -> io::Result<$addr> {
                $ty::local_addr(self)
            }
        }
    };
}

// asyncio turns Nagle's algorithm off on every TCP transport: a small write (a
// request, a reply) goes out at once instead of waiting for the previous one's ACK.
// Failing to set it only costs latency, so it is not an error.
stream_socket!(TcpStream, TcpListener, std::net::SocketAddr, |s| {
    let _ = s.set_nodelay(true);
});
stream_socket!(UnixStream, UnixListener, std::os::unix::net::SocketAddr, |_s| {});
