//! The loop's calls that make transports: `create_server`, `create_connection`,
//! their Unix-domain variants, and `create_datagram_endpoint`.

use std::cell::RefCell;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::rc::Rc;

use super::datagram::Dgram;
use super::server::{Factory, Listen, Listener};
use super::stream::{Conn, Stream};
use super::{DatagramProtocol, DatagramTransport, Protocol, Server, Transport};
use crate::net::{each_addr, resolve, TcpStream, ToSocketAddrs, UnixStream};
use crate::{Error, EventLoop};

impl EventLoop {
    /// asyncio's `create_server`: listens on `addr` (the first of its addresses that
    /// binds, with `SO_REUSEADDR`; a host name is resolved on the loop's executor,
    /// as [`lookup_host`](crate::net::lookup_host) does, so it never blocks the
    /// loop) and, for each connection, makes a protocol with
    /// `factory` and a [`Transport`] for it (`connection_made` first). Serving
    /// starts on the next iteration and goes on until [`Server::close`] or the
    /// loop's close.
    ///
    /// A protocol that panics closes its own connection only; a factory that panics
    /// loses that one connection; both are reported to the exception handler.
    ///
    /// ```
    /// # use shardloop::{Protocol, Transport};
    /// struct Echo { t: Option<Transport> }
    /// impl Protocol for Echo {
    ///     fn connection_made(&mut self, t: Transport) { self.t = Some(t) }
    ///     fn data_received(&mut self, data: &[u8]) { self.t.as_ref().unwrap().write(data) }
    /// }
    /// let lp = shardloop::new_event_loop()?;
    /// let server = lp.run_until_complete(lp.create_server(|| Echo { t: None }, "127.0.0.1:0"))??;
    /// assert!(server.is_serving());
    /// let addr = server.local_addr()?;
    /// server.close();
    /// assert!(std::net::TcpStream::connect(addr).is_err()); // refused: nobody listens
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn create_server<P, F>(
        &self,
        factory: F,
        addr: impl ToSocketAddrs,
    ) -> io::Result<Server>
    where
        P: Protocol,
        F: FnMut() -> P + 'static,
    {
        self.check_open()?;
        let listener = each_addr(resolve(&addr).await?, mio::net::TcpListener::bind)?;
        Listener::start(self, Listen::Tcp(listener), boxed_factory(factory), std::any::type_name::<P>())
    }

    /// [`create_server`](Self::create_server) on a Unix-domain socket bound to
    /// `path` (which must not exist; it is not removed on close).
    pub async fn create_unix_server<P, F>(&self, factory: F, path: impl AsRef<Path>) -> io::Result<Server>
    where
        P: Protocol,
        F: FnMut() -> P + 'static,
    {
        self.check_open()?;
        let listener = mio::net::UnixListener::bind(path)?;
        Listener::start(self, Listen::Unix(listener), boxed_factory(factory), std::any::type_name::<P>())
    }

    /// asyncio's `create_connection`: connects to `addr` (each address it resolves
    /// to in turn; a host name is resolved on the loop's executor, as
    /// [`TcpStream::connect`] does), sets `TCP_NODELAY`, makes the protocol with `factory` and calls its
    /// `connection_made`. Returns the transport and the protocol.
    ///
    /// The protocol comes back as `Rc<RefCell<P>>`, the very object the transport
    /// calls, so that the caller can read what it gathered: borrow it between
    /// callbacks, never across an `.await` (a callback that finds it borrowed
    /// aborts the connection, reported like a panic).
    pub async fn create_connection<P, F>(
        &self,
        factory: F,
        addr: impl crate::net::ToSocketAddrs,
    ) -> io::Result<(Transport, Rc<RefCell<P>>)>
    where
        P: Protocol,
        F: FnOnce() -> P,
    {
        self.check_open()?;
        let connected = TcpStream::connect(addr).await?;
        let socket = connected.io.into_inner();
        socket.set_nodelay(true)?;
        let peer = socket.peer_addr().ok();
        self.start_stream(Stream::Tcp(socket), peer, factory)
    }

    /// [`create_connection`](Self::create_connection) to the Unix-domain socket at
    /// `path`.
    pub async fn create_unix_connection<P, F>(
        &self,
        factory: F,
        path: impl AsRef<Path>,
    ) -> io::Result<(Transport, Rc<RefCell<P>>)>
    where
        P: Protocol,
        F: FnOnce() -> P,
    {
        self.check_open()?;
        let connected = UnixStream::connect(path).await?;
        self.start_stream(Stream::Unix(connected.io.into_inner()), None, factory)
    }

    /// asyncio's `create_datagram_endpoint`: a UDP socket bound to `local_addr`
    /// (default: any port on the unspecified address of `remote_addr`'s family) and,
    /// with `remote_addr`, connected to it (then `sendto(data, None)` sends there
    /// and only its datagrams arrive). Makes the protocol with `factory` and calls
    /// its `connection_made`. `Err(InvalidInput)` if neither address is given.
    ///
    /// See [`DatagramTransport`] for an echo example.
    pub async fn create_datagram_endpoint<P, F>(
        &self,
        factory: F,
        local_addr: Option<SocketAddr>,
        remote_addr: Option<SocketAddr>,
    ) -> io::Result<(DatagramTransport, Rc<RefCell<P>>)>
    where
        P: DatagramProtocol,
        F: FnOnce() -> P,
    {
        self.check_open()?;
        let local = match (local_addr, remote_addr) {
            (Some(local), _) => local,
            (None, Some(SocketAddr::V4(_))) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            (None, Some(SocketAddr::V6(_))) => (Ipv6Addr::UNSPECIFIED, 0).into(),
            (None, None) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "create_datagram_endpoint needs a local_addr or a remote_addr",
                ))
            }
        };
        let socket = mio::net::UdpSocket::bind(local)?;
        if let Some(remote) = remote_addr {
            socket.connect(remote)?;
        }
        let protocol = Rc::new(RefCell::new(factory()));
        let transport = Dgram::start(
            self,
            socket,
            remote_addr,
            protocol.clone(),
            std::any::type_name::<P>(),
        )?;
        Ok((transport, protocol))
    }

    fn check_open(&self) -> io::Result<()> {
        if self.is_closed() {
            return Err(Error::Closed.into());
        }
        Ok(())
    }

    fn start_stream<P: Protocol>(
        &self,
        socket: Stream,
        peer: Option<SocketAddr>,
        factory: impl FnOnce() -> P,
    ) -> io::Result<(Transport, Rc<RefCell<P>>)> {
        let protocol = Rc::new(RefCell::new(factory()));
        let transport = Conn::start(self, socket, peer, protocol.clone(), std::any::type_name::<P>(), |_| ())?;
        Ok((transport, protocol))
    }
}

fn boxed_factory<P: Protocol>(mut factory: impl FnMut() -> P + 'static) -> Factory {
    Box::new(move || Rc::new(RefCell::new(factory())) as Rc<RefCell<dyn Protocol>>)
}
