//! [`ServerSocket`]: a listening socket of a server, as asyncio's `Server.sockets`
//! lists them.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::os::unix::net::SocketAddr as UnixSocketAddr;
use std::rc::Rc;

/// The address a server listens on: an IP address and port, or a Unix-domain path.
///
/// `pub` in a private module, like the streams' sealed trait that returns it:
/// nothing outside the crate can name it.
pub enum ListenAddr {
    Ip(SocketAddr),
    Unix(UnixSocketAddr),
}

impl From<SocketAddr> for ListenAddr {
    fn from(addr: SocketAddr) -> Self {
        ListenAddr::Ip(addr)
    }
}

impl From<UnixSocketAddr> for ListenAddr {
    fn from(addr: UnixSocketAddr) -> Self {
        ListenAddr::Unix(addr)
    }
}

/// What a [`ServerSocket`] asks of the server it belongs to (the streams server and
/// the protocol server).
pub(crate) trait Listening {
    /// The listening socket's descriptor, `None` once the server is closed.
    fn listening_fd(&self) -> Option<RawFd>;

    /// The listening socket's address, read from the socket
    /// (`Err(NotConnected)` once the server is closed).
    fn listening_addr(&self) -> io::Result<ListenAddr>;
}

/// One listening socket of a server: an entry of
/// [`streams::Server::sockets`](crate::streams::Server::sockets) or
/// [`Server::sockets`](crate::Server::sockets), asyncio's `TransportSocket`.
///
/// It is a handle on the server's own socket, not a copy of it: it reads the
/// socket's address when asked, and it gives the descriptor only while the server
/// serves (asyncio's `fileno()` is `-1` after `close`, here it is `None`). The
/// descriptor belongs to the server: use it for `getsockopt` and the like, do not
/// close it.
///
/// ```
/// shardloop::run(async {
///     let server = shardloop::streams::start_server("127.0.0.1:0", |_r, _w| async {}).await?;
///     let sockets = server.sockets();
///     assert_eq!(sockets.len(), 1);
///     let socket = &sockets[0];
///     assert_eq!(socket.local_addr()?, server.local_addr());
///     assert!(socket.raw_fd().is_some());
///     server.close();
///     assert!(server.sockets().is_empty());
///     assert!(socket.raw_fd().is_none()); // closed with the server
///     Ok::<_, Box<dyn std::error::Error>>(())
/// })??;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct ServerSocket {
    server: Rc<dyn Listening>,
}

impl ServerSocket {
    pub(crate) fn new(server: Rc<dyn Listening>) -> Self {
        ServerSocket { server }
    }

    /// The listening socket's descriptor while its server serves; `None` once it
    /// is closed (asyncio's `fileno()`).
    pub fn raw_fd(&self) -> Option<RawFd> {
        self.server.listening_fd()
    }

    /// The address a TCP server's socket is bound to (asyncio's `getsockname()`).
    /// `Err(NotConnected)` once the server is closed, `Err(InvalidInput)` for a
    /// Unix-domain server's socket.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self.server.listening_addr()? {
            ListenAddr::Ip(addr) => Ok(addr),
            ListenAddr::Unix(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a unix-domain socket has no IP address",
            )),
        }
    }

    /// The path a Unix-domain server's socket is bound to (asyncio's
    /// `getsockname()`). `Err(NotConnected)` once the server is closed,
    /// `Err(InvalidInput)` for a TCP server's socket.
    pub fn unix_local_addr(&self) -> io::Result<UnixSocketAddr> {
        match self.server.listening_addr()? {
            ListenAddr::Unix(addr) => Ok(addr),
            ListenAddr::Ip(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a TCP socket has no unix-domain address",
            )),
        }
    }
}

impl fmt::Debug for ServerSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ServerSocket");
        d.field("fd", &self.raw_fd());
        match self.server.listening_addr() {
            Ok(ListenAddr::Ip(addr)) => d.field("local_addr", &addr),
            Ok(ListenAddr::Unix(addr)) => d.field("local_addr", &addr),
            Err(_) => d.field("local_addr", &"closed"),
        };
        d.finish()
    }
}

/// The error of a server's socket once the server is closed.
pub(crate) fn server_closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the server is closed")
}
