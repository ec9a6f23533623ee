//! Unix-domain stream sockets: [`UnixListener`], [`UnixStream`].

use std::cell::Cell;
use std::fmt;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::SocketAddr;
use std::path::Path;
use std::task::{Context, Poll};

use super::{accept_with_backoff, impl_async_read, impl_async_write, impl_owned_io};
use crate::io::reactor::Direction;
use crate::io::registration::Registered;

/// A Unix-domain socket listening for connections, registered with this thread's
/// loop. The socket file is not removed on drop (as with std's).
///
/// ```
/// use futures_util::{AsyncReadExt, AsyncWriteExt};
/// use shardloop::net::{UnixListener, UnixStream};
/// let dir = std::env::temp_dir().join(format!("shardloop-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let path = dir.join("sock");
/// let _ = std::fs::remove_file(&path);
/// shardloop::run(async {
///     let listener = UnixListener::bind(&path)?;
///     let client = shardloop::spawn({
///         let path = path.clone();
///         async move {
///             let mut s = UnixStream::connect(&path).await?;
///             s.write_all(b"hi").await?;
///             std::io::Result::Ok(())
///         }
///     });
///     let (mut conn, _) = listener.accept().await?;
///     let mut buf = Vec::new();
///     conn.read_to_end(&mut buf).await?;
///     assert_eq!(buf, b"hi");
///     client.await.unwrap()?;
///     std::io::Result::Ok(())
/// })??;
/// std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct UnixListener {
    io: Registered<mio::net::UnixListener>,
    /// Out of descriptors right now (so the warning is logged once per episode).
    starved: Cell<bool>,
}

impl UnixListener {
    /// Binds to the socket file `path` (which must not exist) and listens.
    pub fn bind(path: impl AsRef<Path>) -> io::Result<Self> {
        Self::from_mio(mio::net::UnixListener::bind(path)?)
    }

    /// Takes over a listener made elsewhere (it is switched to non-blocking mode).
    pub fn from_std(listener: std::os::unix::net::UnixListener) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        Self::from_mio(mio::net::UnixListener::from_std(listener))
    }

    fn from_mio(listener: mio::net::UnixListener) -> io::Result<Self> {
        Ok(UnixListener {
            io: Registered::listener(listener, "a UnixListener")?,
            starved: Cell::new(false),
        })
    }

    /// Waits for the next connection. Like
    /// [`TcpListener::accept`](crate::net::TcpListener::accept), it backs off instead
    /// of failing when the process is out of file descriptors.
    pub async fn accept(&self) -> io::Result<(UnixStream, SocketAddr)> {
        accept_with_backoff(&self.starved, || self.describe(), |cx| self.poll_accept(cx)).await
    }

    /// One accept, as a poll: for an accept loop of its own (the streams server's,
    /// which drops its listener while it waits).
    pub(crate) fn poll_accept(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(UnixStream, SocketAddr)>> {
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
            .map(|r| r.and_then(|(stream, peer)| Ok((UnixStream::from_mio(stream)?, peer))))
    }

    /// One accept, as a poll, for a caller that does not need the peer's address
    /// (which costs a system call on a proactor loop).
    pub(crate) fn poll_accept_stream(&self, cx: &mut Context<'_>) -> Poll<io::Result<UnixStream>> {
        match self.io.poll_accept_ring(cx) {
            Some(accepted) => accepted.map(|r| {
                r.and_then(|fd| UnixStream::from_mio(mio::net::UnixStream::from_std(fd.into())))
            }),
            None => self.poll_accept(cx).map(|r| r.map(|(stream, _)| stream)),
        }
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()
    }

    fn describe(&self) -> String {
        match self
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(Path::to_owned))
        {
            Some(p) => format!("unix listener on {}", p.display()),
            None => "unix listener".to_string(),
        }
    }
}

impl fmt::Debug for UnixListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixListener")
            .field("local_addr", &self.local_addr().ok())
            .finish()
    }
}

impl AsRawFd for UnixListener {
    fn as_raw_fd(&self) -> RawFd {
        self.io.get_ref().as_raw_fd()
    }
}

impl AsFd for UnixListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.get_ref().as_fd()
    }
}

/// A Unix-domain stream connection, registered with this thread's loop.
///
/// It implements `futures_io::AsyncRead` and `AsyncWrite` (also through
/// `&UnixStream`, so one task can read while another writes); `poll_close` shuts the
/// write side down. On a proactor loop writes are ring sends, behind the write, as
/// [`TcpStream`](crate::net::TcpStream)'s are.
pub struct UnixStream {
    pub(crate) io: Registered<mio::net::UnixStream>,
}

impl UnixStream {
    /// Connects to the socket file `path`.
    pub async fn connect(path: impl AsRef<Path>) -> io::Result<Self> {
        let stream = Self::from_mio(mio::net::UnixStream::connect(path)?)?;
        // Local connects finish at once nearly always; wait for writable in case
        // this one did not, then look for an error (mio's recipe, as for TCP).
        stream
            .io
            .io(Direction::Write, |s| match s.take_error()? {
                Some(e) => Err(e),
                None => match s.peer_addr() {
                    Ok(_) => Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                        Err(io::ErrorKind::WouldBlock.into())
                    }
                    Err(e) => Err(e),
                },
            })
            .await?;
        Ok(stream)
    }

    /// A connected pair of streams.
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let (a, b) = mio::net::UnixStream::pair()?;
        Ok((Self::from_mio(a)?, Self::from_mio(b)?))
    }

    /// Takes over a connected stream made elsewhere (switched to non-blocking mode).
    pub fn from_std(stream: std::os::unix::net::UnixStream) -> io::Result<Self> {
        stream.set_nonblocking(true)?;
        Self::from_mio(mio::net::UnixStream::from_std(stream))
    }

    fn from_mio(stream: mio::net::UnixStream) -> io::Result<Self> {
        Ok(UnixStream {
            io: Registered::stream(stream, "a UnixStream")?,
        })
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().peer_addr()
    }

    /// Shuts down the read side, the write side or both (`Shutdown::Write` is a
    /// half-close). On a proactor loop, a write the ring still sends goes first: if
    /// it is in the kernel still, a task of the loop's shuts the write side down
    /// once it is done (`AsyncWriteExt::close` waits for it).
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

    /// Takes the pending socket error (`SO_ERROR`), if any.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.io.get_ref().take_error()
    }
}

impl fmt::Debug for UnixStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixStream")
            .field("local_addr", &self.local_addr().ok())
            .field("peer_addr", &self.peer_addr().ok())
            .finish()
    }
}

impl AsRawFd for UnixStream {
    fn as_raw_fd(&self) -> RawFd {
        self.io.get_ref().as_raw_fd()
    }
}

impl AsFd for UnixStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.get_ref().as_fd()
    }
}

impl_async_read!(UnixStream, |s| &s.io);
impl_async_read!(&UnixStream, |s| &s.io);
impl_async_write!(UnixStream, |s| &s.io);
impl_async_write!(&UnixStream, |s| &s.io);
impl_owned_io!(UnixStream, |s| &s.io, read);
impl_owned_io!(UnixStream, |s| &s.io, write);
