//! TCP: [`TcpListener`], [`TcpStream`] and a stream's owned halves.

use std::cell::Cell;
use std::fmt;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::rc::Rc;
use std::task::{Context, Poll};

use socket2::{Domain, Protocol, Socket, Type};

use super::lookup::{resolve, ToSocketAddrs};
use super::{
    accept_with_backoff, each_addr, impl_async_read, impl_async_write, impl_owned_io, no_addresses,
};
use crate::io::reactor::Direction;
use crate::io::registration::Registered;

/// The listen backlog of [`TcpListener::bind_reuseport`] (mio's `bind` uses the same).
const BACKLOG: i32 = 1024;

/// A TCP socket listening for connections, registered with this thread's loop.
///
/// ```
/// use shardloop::net::{TcpListener, TcpStream};
/// shardloop::run(async {
///     let listener = TcpListener::bind("127.0.0.1:0")?;
///     let addr = listener.local_addr()?;
///     let client = shardloop::spawn(async move { TcpStream::connect(addr).await });
///     let (conn, peer) = listener.accept().await?;
///     assert_eq!(conn.peer_addr()?, peer);
///     assert_eq!(client.await.unwrap()?.local_addr()?, peer);
///     std::io::Result::Ok(())
/// })??;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct TcpListener {
    io: Registered<mio::net::TcpListener>,
    /// Out of descriptors right now (so the warning is logged once per episode).
    starved: Cell<bool>,
}

impl TcpListener {
    /// Binds to `addr` (the first of its addresses that works) and listens, with
    /// `SO_REUSEADDR` set. Like std's, this is synchronous: a host name in `addr` is
    /// resolved on this thread (bind to addresses, or [`lookup_host`] first, on a
    /// busy loop).
    ///
    /// [`lookup_host`]: super::lookup_host
    pub fn bind(addr: impl std::net::ToSocketAddrs) -> io::Result<Self> {
        each_addr(addr.to_socket_addrs()?, |a| {
            Self::from_mio(mio::net::TcpListener::bind(a)?)
        })
    }

    /// Like [`bind`](Self::bind), with `SO_REUSEPORT` set as well, so that several
    /// listeners (one per shard) can bind the same address and the kernel spreads
    /// incoming connections between them.
    ///
    /// ```
    /// shardloop::run(async {
    ///     let a = shardloop::net::TcpListener::bind_reuseport("127.0.0.1:0")?;
    ///     let b = shardloop::net::TcpListener::bind_reuseport(a.local_addr()?)?;
    ///     assert_eq!(a.local_addr()?, b.local_addr()?);
    ///     std::io::Result::Ok(())
    /// })??;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn bind_reuseport(addr: impl std::net::ToSocketAddrs) -> io::Result<Self> {
        each_addr(addr.to_socket_addrs()?, |a| {
            let socket = Socket::new(Domain::for_address(a), Type::STREAM, Some(Protocol::TCP))?;
            socket.set_reuse_address(true)?;
            socket.set_reuse_port(true)?;
            socket.set_nonblocking(true)?;
            socket.bind(&a.into())?;
            socket.listen(BACKLOG)?;
            Self::from_mio(mio::net::TcpListener::from_std(socket.into()))
        })
    }

    /// Takes over a listener made elsewhere (it is switched to non-blocking mode).
    pub fn from_std(listener: std::net::TcpListener) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        Self::from_mio(mio::net::TcpListener::from_std(listener))
    }

    fn from_mio(listener: mio::net::TcpListener) -> io::Result<Self> {
        Ok(TcpListener {
            io: Registered::listener(listener, "a TcpListener")?,
            starved: Cell::new(false),
        })
    }

    /// Waits for the next connection.
    ///
    /// When the process runs out of file descriptors (`EMFILE`, `ENFILE`), this does
    /// not fail: it logs a warning once, retries every 100 ms, and returns a
    /// connection as soon as descriptors are free again. Connections that die before
    /// they are accepted are skipped.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        accept_with_backoff(&self.starved, || self.describe(), |cx| self.poll_accept(cx)).await
    }

    /// One accept, as a poll: for an accept loop of its own (the streams server's,
    /// which drops its listener while it waits).
    pub(crate) fn poll_accept(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(TcpStream, SocketAddr)>> {
        if self.io.accepts_by_ring() {
            // The ring's accept does not say who connected: ask the socket.
            return self.poll_accept_stream(cx).map(|r| {
                let stream = r?;
                let peer = stream.peer_addr().map_err(super::peer_gone)?;
                Ok((stream, peer))
            });
        }
        self.io
            .poll_io(Direction::Read, cx, |l| l.accept())
            .map(|r| r.and_then(|(stream, peer)| Ok((TcpStream::from_mio(stream)?, peer))))
    }

    /// One accept, as a poll, for a caller that does not need the peer's address
    /// (which costs a system call on a proactor loop).
    pub(crate) fn poll_accept_stream(&self, cx: &mut Context<'_>) -> Poll<io::Result<TcpStream>> {
        match self.io.poll_accept_ring(cx) {
            Some(accepted) => accepted.map(|r| {
                r.and_then(|fd| TcpStream::from_mio(mio::net::TcpStream::from_std(fd.into())))
            }),
            None => self.poll_accept(cx).map(|r| r.map(|(stream, _)| stream)),
        }
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()
    }

    /// Sets `IP_TTL` on the listener.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.io.get_ref().set_ttl(ttl)
    }

    fn describe(&self) -> String {
        match self.local_addr() {
            Ok(a) => format!("tcp listener on {a}"),
            Err(_) => "tcp listener".to_string(),
        }
    }
}

impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpListener")
            .field("local_addr", &self.local_addr().ok())
            .finish()
    }
}

impl AsRawFd for TcpListener {
    fn as_raw_fd(&self) -> RawFd {
        self.io.get_ref().as_raw_fd()
    }
}

impl AsFd for TcpListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.get_ref().as_fd()
    }
}

/// A TCP connection, registered with this thread's loop.
///
/// It implements `futures_io::AsyncRead` and `AsyncWrite` (also through `&TcpStream`,
/// so one task can read while another writes); `poll_close` shuts the write side
/// down. [`split`](Self::split) gives owned halves for two tasks.
///
/// On a proactor loop a write from the stream's loop is a ring send, behind the
/// write: `poll_write` copies the bytes (up to 256 KiB) and returns at once, the
/// loop's next `io_uring_enter` sends them, and a failed send is reported by the
/// next write or by `poll_flush`, which waits for the send (`poll_close` flushes
/// first). Bytes a write accepted are sent even if the stream is dropped right
/// after.
pub struct TcpStream {
    pub(crate) io: Registered<mio::net::TcpStream>,
}

impl TcpStream {
    /// Connects to `addr`, trying each address it resolves to in turn. A host name
    /// is resolved on the loop's executor ([`lookup_host`](super::lookup_host)), so
    /// the loop keeps running meanwhile; a numeric address is used at once.
    pub async fn connect(addr: impl ToSocketAddrs) -> io::Result<Self> {
        let mut last = None;
        for a in resolve(&addr).await? {
            match Self::connect_addr(a).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(no_addresses))
    }

    async fn connect_addr(addr: SocketAddr) -> io::Result<Self> {
        let stream = Self::from_mio(mio::net::TcpStream::connect(addr)?)?;
        // The connect is non-blocking: it is done when the socket turns writable and
        // has no error and a peer (mio's recipe; a writable edge can come early).
        stream
            .io
            .io(Direction::Write, |s| {
                if let Some(e) = s.take_error()? {
                    return Err(e);
                }
                match s.peer_addr() {
                    Ok(_) => Ok(()),
                    Err(e)
                        if e.kind() == io::ErrorKind::NotConnected
                            || e.raw_os_error() == Some(libc::EINPROGRESS) =>
                    {
                        Err(io::ErrorKind::WouldBlock.into())
                    }
                    Err(e) => Err(e),
                }
            })
            .await?;
        Ok(stream)
    }

    /// Takes over a connected stream made elsewhere (switched to non-blocking mode).
    pub fn from_std(stream: std::net::TcpStream) -> io::Result<Self> {
        stream.set_nonblocking(true)?;
        Self::from_mio(mio::net::TcpStream::from_std(stream))
    }

    /// Gives the connection back as a std stream (still non-blocking), released
    /// from this loop: send it to another thread and [`from_std`](Self::from_std) it
    /// there. This is how a connection moves to another shard.
    ///
    /// On a proactor loop the ring may have received bytes ahead of the last read
    /// (it receives the next bytes as soon as a reader has taken the last ones):
    /// they cannot go back into the socket, so they are lost, and logged as an
    /// error. Move a stream before reading from it, or once its peer waits for an
    /// answer (nothing is in flight then). On the proactor a write's bytes go on
    /// through the ring after it returns: flush the stream before moving it, as a
    /// send still in the kernel (a peer that reads nothing) is waited for only a
    /// moment, then left to the kernel and logged, and the new owner's bytes could
    /// go ahead of it.
    pub fn into_std(self) -> std::net::TcpStream {
        std::net::TcpStream::from(std::os::fd::OwnedFd::from(self.io.into_inner()))
    }

    fn from_mio(stream: mio::net::TcpStream) -> io::Result<Self> {
        Ok(TcpStream {
            io: Registered::stream(stream, "a TcpStream")?,
        })
    }

    /// Sets `TCP_NODELAY` (disables Nagle's algorithm: small writes go out at once).
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.io.get_ref().set_nodelay(nodelay)
    }

    /// Whether `TCP_NODELAY` is set.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.io.get_ref().nodelay()
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()
    }

    /// Shuts down the read side, the write side or both. `Shutdown::Write` is a
    /// half-close: the peer reads end-of-stream, and this side can still read.
    /// On a proactor loop, a write the ring still sends goes first: if it is in
    /// the kernel still, the write side is shut down once it is done, by a task of
    /// the loop's (`AsyncWriteExt::close` is the way to wait for it).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        if how != Shutdown::Read && self.io.shut_down_after_send(|| self.as_fd().try_clone_to_owned())? {
            return match how {
                Shutdown::Both => self.io.get_ref().shutdown(Shutdown::Read),
                _ => Ok(()),
            };
        }
        self.io.get_ref().shutdown(how)?;
        if how != Shutdown::Read {
            self.io.note_write_shut();
        }
        Ok(())
    }

    /// Sets `IP_TTL`.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.io.get_ref().set_ttl(ttl)
    }

    /// Takes the pending socket error (`SO_ERROR`), if any.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.io.get_ref().take_error()
    }

    /// Splits the stream into a read half and a write half, each owned (one `Rc`
    /// shared between them), to give to two tasks. Dropping the write half shuts
    /// the write side down; [`OwnedReadHalf::reunite`] puts them back together.
    ///
    /// ```
    /// use futures_util::{AsyncReadExt, AsyncWriteExt};
    /// use shardloop::net::{TcpListener, TcpStream};
    /// shardloop::run(async {
    ///     let listener = TcpListener::bind("127.0.0.1:0")?;
    ///     let addr = listener.local_addr()?;
    ///     shardloop::spawn(async move {
    ///         let (conn, _) = listener.accept().await.unwrap();
    ///         let (mut rd, mut wr) = conn.split();
    ///         futures_util::io::copy(&mut rd, &mut wr).await.unwrap(); // echo to EOF
    ///     });
    ///     let (mut rd, mut wr) = TcpStream::connect(addr).await?.split();
    ///     wr.write_all(b"hello").await?;
    ///     drop(wr); // half-close: the echo loop sees EOF
    ///     let mut back = Vec::new();
    ///     rd.read_to_end(&mut back).await?;
    ///     assert_eq!(back, b"hello");
    ///     std::io::Result::Ok(())
    /// })??;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        let stream = Rc::new(self);
        (
            OwnedReadHalf {
                stream: stream.clone(),
            },
            OwnedWriteHalf {
                stream,
                shutdown_on_drop: true,
            },
        )
    }
}

impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpStream")
            .field("local_addr", &self.local_addr().ok())
            .field("peer_addr", &self.peer_addr().ok())
            .finish()
    }
}

impl AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> RawFd {
        self.io.get_ref().as_raw_fd()
    }
}

impl AsFd for TcpStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.get_ref().as_fd()
    }
}

impl_async_read!(TcpStream, |s| &s.io);
impl_async_read!(&TcpStream, |s| &s.io);
impl_async_write!(TcpStream, |s| &s.io);
impl_async_write!(&TcpStream, |s| &s.io);
impl_owned_io!(TcpStream, |s| &s.io, read);
impl_owned_io!(TcpStream, |s| &s.io, write);

/// The read half of a [`TcpStream`], from [`TcpStream::split`].
#[derive(Debug)]
pub struct OwnedReadHalf {
    stream: Rc<TcpStream>,
}

/// The write half of a [`TcpStream`], from [`TcpStream::split`]. Dropping it (or
/// closing it with `AsyncWriteExt::close`) shuts the write side down.
#[derive(Debug)]
pub struct OwnedWriteHalf {
    stream: Rc<TcpStream>,
    shutdown_on_drop: bool,
}

impl OwnedReadHalf {
    /// Puts the two halves of one stream back together; gives them back if they
    /// come from different streams.
    pub fn reunite(self, mut other: OwnedWriteHalf) -> Result<TcpStream, ReuniteError> {
        if !Rc::ptr_eq(&self.stream, &other.stream) {
            return Err(ReuniteError(self, other));
        }
        other.shutdown_on_drop = false;
        drop(other);
        Ok(Rc::try_unwrap(self.stream).expect("a stream has exactly two halves"))
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.stream.peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }
}

impl OwnedWriteHalf {
    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.stream.peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }
}

impl Drop for OwnedWriteHalf {
    fn drop(&mut self) {
        if self.shutdown_on_drop {
            let _ = self.stream.shutdown(Shutdown::Write);
        }
    }
}

impl_async_read!(OwnedReadHalf, |s| &s.stream.io);
impl_async_write!(OwnedWriteHalf, |s| &s.stream.io);
impl_owned_io!(OwnedReadHalf, |s| &s.stream.io, read);
impl_owned_io!(OwnedWriteHalf, |s| &s.stream.io, write);

/// The halves given to [`OwnedReadHalf::reunite`] came from different streams.
#[derive(Debug)]
pub struct ReuniteError(pub OwnedReadHalf, pub OwnedWriteHalf);

impl fmt::Display for ReuniteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tried to reunite halves that are not from the same socket")
    }
}

impl std::error::Error for ReuniteError {}
