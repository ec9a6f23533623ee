//! A UDP endpoint driven by callbacks: [`DatagramTransport`] and the endpoint it
//! is a handle to (asyncio's `_SelectorDatagramTransport`).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::{Rc, Weak};

use mio::net::UdpSocket;
use mio::Interest;

use super::endpoint::{with_read_buffer, Core, Endpoint};
use super::DatagramProtocol;
use crate::{Error, EventLoop};

/// Datagrams received per turn before the endpoint yields to the rest of the loop.
const DATAGRAMS_PER_TURN: usize = 32;

/// A datagram waiting to be sent, and where to (None: the connected peer).
type Queued = (Box<[u8]>, Option<SocketAddr>);

/// One endpoint: the shared core, the socket, the datagrams waiting to be sent.
pub(super) struct Dgram {
    core: Core<dyn DatagramProtocol>,
    me: Weak<Dgram>,
    socket: RefCell<Option<UdpSocket>>,
    /// The connected peer (`remote_addr`), if any.
    peer: Option<SocketAddr>,
    out: RefCell<VecDeque<Queued>>,
    out_bytes: Cell<usize>,
}

impl Dgram {
    /// Registers `socket` with `lp` for `protocol` and calls `connection_made`.
    pub(super) fn start(
        lp: &EventLoop,
        socket: UdpSocket,
        peer: Option<SocketAddr>,
        protocol: Rc<RefCell<dyn DatagramProtocol>>,
        name: &'static str,
    ) -> io::Result<DatagramTransport> {
        if lp.is_closed() {
            return Err(Error::Closed.into());
        }
        let fd = socket.as_raw_fd();
        let ep = Rc::new_cyclic(|me| Dgram {
            core: Core::new(lp, protocol, name),
            me: me.clone(),
            socket: RefCell::new(Some(socket)),
            peer,
            out: RefCell::new(VecDeque::new()),
            out_bytes: Cell::new(0),
        });
        let token = lp.inner.reactor.register_sink(
            fd,
            Some(Interest::READABLE | Interest::WRITABLE),
            ep.clone(),
        )?;
        ep.core.token.set(Some(token));
        let transport = DatagramTransport { ep };
        let handle = transport.clone();
        transport
            .ep
            .call("connection_made", |p| p.connection_made(handle));
        Ok(transport)
    }

    fn receive_and_deliver(&self) {
        for _ in 0..DATAGRAMS_PER_TURN {
            if !self.core.reading() {
                return;
            }
            let more = with_read_buffer(|buf| {
                let r = match self.socket.borrow().as_ref() {
                    Some(s) => s.recv_from(buf),
                    None => return false,
                };
                match r {
                    Ok((n, from)) => {
                        self.call("datagram_received", |p| p.datagram_received(&buf[..n], from));
                        true
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
                    Err(e) => {
                        self.call("error_received", |p| p.error_received(e));
                        true
                    }
                }
            });
            if !more {
                self.core.readable.set(false);
                return;
            }
        }
        if self.core.reading() && self.core.readable.get() {
            self.requeue();
        }
    }

    fn send_one(&self, data: &[u8], to: Option<SocketAddr>) -> io::Result<usize> {
        let socket = self.socket.borrow();
        let Some(s) = socket.as_ref() else {
            return Ok(data.len());
        };
        loop {
            let r = match to {
                Some(addr) => s.send_to(data, addr),
                None => s.send(data),
            };
            match r {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }

    /// A send failed: tell the protocol, now if none of its methods is running,
    /// else on the next iteration (it is borrowed until that method returns).
    fn send_failed(&self, err: io::Error) {
        let busy = self.core.protocol_busy();
        match (busy, self.core.event_loop(), self.me()) {
            (true, Some(lp), Some(me)) => {
                let _ = lp.call_soon(move || {
                    me.call("error_received", |p| p.error_received(err));
                });
            }
            _ => {
                self.call("error_received", |p| p.error_received(err));
            }
        }
    }

    fn sendto(&self, data: &[u8], addr: Option<SocketAddr>) -> io::Result<()> {
        let to = match (self.peer, addr) {
            (Some(peer), Some(a)) if a != peer => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("invalid address: must be None or {peer}"),
                ))
            }
            (Some(_), _) => None,
            (None, Some(a)) => Some(a),
            (None, None) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "no address given, and the endpoint has no remote_addr",
                ))
            }
        };
        if self.core.is_lost() {
            self.core.write_after_lost();
            return Ok(());
        }
        if self.out.borrow().is_empty() {
            match self.send_one(data, to) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.core.writable.set(false);
                }
                Err(e) => {
                    self.send_failed(e);
                    return Ok(());
                }
            }
        }
        self.out.borrow_mut().push_back((data.into(), to));
        self.out_bytes.set(self.out_bytes.get() + data.len());
        self.maybe_pause();
        Ok(())
    }

    /// Sends the queued datagrams until the socket is full; a datagram that fails
    /// goes to `error_received` and is dropped (asyncio's `_sendto_ready`).
    fn flush(&self) {
        loop {
            let Some((data, to)) = self.out.borrow_mut().pop_front() else {
                break;
            };
            match self.send_one(&data, to) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.core.writable.set(false);
                    self.out.borrow_mut().push_front((data, to));
                    break;
                }
                result => {
                    self.out_bytes.set(self.out_bytes.get() - data.len());
                    if let Err(e) = result {
                        self.call("error_received", |p| p.error_received(e));
                    }
                }
            }
        }
        self.maybe_resume();
        if self.out.borrow().is_empty() && self.core.closing.get() {
            self.schedule_lost(None);
        }
    }

}

impl Endpoint for Dgram {
    type Proto = dyn DatagramProtocol;

    fn core(&self) -> &Core<dyn DatagramProtocol> {
        &self.core
    }

    fn me(&self) -> Option<Rc<Self>> {
        self.me.upgrade()
    }

    fn buffered(&self) -> usize {
        self.out_bytes.get()
    }

    fn discard_buffer(&self) {
        let dropped = std::mem::take(&mut *self.out.borrow_mut());
        drop(dropped);
        self.out_bytes.set(0);
    }

    fn has_pending_writes(&self) -> bool {
        !self.out.borrow().is_empty()
    }

    fn take_socket(&self) -> Option<Box<dyn AsRawFd>> {
        let socket = self.socket.borrow_mut().take()?;
        Some(Box::new(socket))
    }

    fn write_ready(&self) {
        self.flush();
    }

    fn read_ready(&self) {
        self.receive_and_deliver();
    }
}

/// asyncio's datagram transport: how a [`DatagramProtocol`] sends and closes. A
/// cheap `Clone` handle, `!Send`.
///
/// ```
/// use std::net::SocketAddr;
/// use shardloop::{DatagramProtocol, DatagramTransport};
///
/// struct Echo { t: Option<DatagramTransport> }
/// impl DatagramProtocol for Echo {
///     fn connection_made(&mut self, t: DatagramTransport) { self.t = Some(t) }
///     fn datagram_received(&mut self, data: &[u8], from: SocketAddr) {
///         self.t.as_ref().unwrap().sendto(data, Some(from)).unwrap();
///     }
/// }
///
/// #[derive(Default)]
/// struct Ping { got: Vec<u8> }
/// impl DatagramProtocol for Ping {
///     fn connection_made(&mut self, t: DatagramTransport) { t.sendto(b"ping", None).unwrap() }
///     fn datagram_received(&mut self, data: &[u8], _from: SocketAddr) {
///         self.got = data.to_vec();
///         shardloop::get_running_loop().unwrap().stop();
///     }
/// }
///
/// let lp = shardloop::new_event_loop()?;
/// let local: SocketAddr = "127.0.0.1:0".parse()?;
/// let (server, _) = lp.run_until_complete(
///     lp.create_datagram_endpoint(|| Echo { t: None }, Some(local), None))??;
/// let (client, ping) = lp.run_until_complete(
///     lp.create_datagram_endpoint(Ping::default, None, Some(server.local_addr()?)))??;
/// lp.run_forever()?;
/// assert_eq!(ping.borrow().got, b"ping");
/// client.close();
/// server.close();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct DatagramTransport {
    ep: Rc<Dgram>,
}

impl DatagramTransport {
    /// Sends `data` as one datagram to `addr` (None: to the endpoint's
    /// `remote_addr`), at once if nothing is queued, else once the socket can take
    /// it. A failed send goes to the protocol's `error_received`; a bad address is
    /// `Err(InvalidInput)` here (an endpoint with a `remote_addr` sends there only).
    pub fn sendto(&self, data: &[u8], addr: Option<SocketAddr>) -> io::Result<()> {
        self.ep.sendto(data, addr)
    }

    /// Closes the endpoint once the queued datagrams are sent; then
    /// `connection_lost(None)` is called (on a later iteration).
    pub fn close(&self) {
        self.ep.close();
    }

    /// Closes at once, dropping what is queued.
    pub fn abort(&self) {
        self.ep.force_close(None);
    }

    /// Whether the endpoint is closing or closed.
    pub fn is_closing(&self) -> bool {
        self.ep.core.closing.get()
    }

    /// Bytes queued, not sent yet.
    pub fn get_write_buffer_size(&self) -> usize {
        self.ep.buffered()
    }

    /// Sets the marks of the send queue (as
    /// [`Transport::set_write_buffer_limits`](crate::Transport::set_write_buffer_limits)).
    pub fn set_write_buffer_limits(&self, high: usize, low: usize) -> Result<(), Error> {
        self.ep.set_limits(high, low)
    }

    /// The local address; `Err(NotConnected)` once closed.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self.ep.socket.borrow().as_ref() {
            Some(s) => s.local_addr(),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// The `remote_addr` it was created with; `Err(NotConnected)` if none.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.ep.peer.ok_or_else(|| io::ErrorKind::NotConnected.into())
    }
}

impl fmt::Debug for DatagramTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatagramTransport")
            .field("protocol", &self.ep.core.name)
            .field("peer_addr", &self.ep.peer)
            .field("closing", &self.is_closing())
            .finish()
    }
}
