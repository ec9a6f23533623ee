//! UDP: [`UdpSocket`].

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use super::lookup::{resolve, ToSocketAddrs};
use super::{each_addr, no_addresses};
use crate::io::datagrams::SendDatagram;
use crate::io::reactor::Direction;
use crate::io::registration::Registered;

/// A UDP socket, registered with this thread's loop.
///
/// Several tasks may send or receive on one socket at once (share it with an `Rc`);
/// each datagram goes to exactly one receiver.
///
/// ```
/// use shardloop::net::UdpSocket;
/// shardloop::run(async {
///     let a = UdpSocket::bind("127.0.0.1:0")?;
///     let b = UdpSocket::bind("127.0.0.1:0")?;
///     a.send_to(b"ping", b.local_addr()?).await?;
///     let mut buf = [0u8; 16];
///     let (n, from) = b.recv_from(&mut buf).await?;
///     assert_eq!((&buf[..n], from), (&b"ping"[..], a.local_addr()?));
///
///     b.connect(a.local_addr()?).await?; // now send/recv talk to `a` only
///     b.send(b"pong").await?;
///     let (n, _) = a.recv_from(&mut buf).await?;
///     assert_eq!(&buf[..n], b"pong");
///     std::io::Result::Ok(())
/// })??;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct UdpSocket {
    io: Registered<mio::net::UdpSocket>,
}

impl UdpSocket {
    /// Binds to `addr` (the first of its addresses that works). Like std's, this is
    /// synchronous: a host name in `addr` is resolved on this thread.
    pub fn bind(addr: impl std::net::ToSocketAddrs) -> io::Result<Self> {
        each_addr(addr.to_socket_addrs()?, |a| {
            Self::from_mio(mio::net::UdpSocket::bind(a)?)
        })
    }

    /// Takes over a socket made elsewhere (it is switched to non-blocking mode).
    pub fn from_std(socket: std::net::UdpSocket) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        Self::from_mio(mio::net::UdpSocket::from_std(socket))
    }

    fn from_mio(socket: mio::net::UdpSocket) -> io::Result<Self> {
        Ok(UdpSocket {
            io: Registered::datagram(socket, "a UdpSocket")?,
        })
    }

    /// Sets the default peer: [`send`](Self::send) goes there, and
    /// [`recv`](Self::recv) only takes datagrams from there. No packet is sent.
    ///
    /// It is async (as tokio's is) because a host name in `addr` is resolved on the
    /// loop's executor ([`lookup_host`](super::lookup_host)); a numeric address
    /// connects without waiting. The first of the addresses that works is taken.
    pub async fn connect(&self, addr: impl ToSocketAddrs) -> io::Result<()> {
        each_addr(resolve(&addr).await?, |a| self.io.get_ref().connect(a))
    }

    /// Sends `buf` as one datagram to `target` (its first address: a host name is
    /// resolved on the loop's executor, a numeric address costs nothing); returns
    /// the bytes sent.
    pub async fn send_to(&self, buf: &[u8], target: impl ToSocketAddrs) -> io::Result<usize> {
        let target = resolve(&target).await?.next().ok_or_else(no_addresses)?;
        if self.io.ring_datagrams().is_some() {
            return SendDatagram::new(&self.io, buf, Some(target)).await;
        }
        self.io
            .io(Direction::Write, |s| s.send_to(buf, target))
            .await
    }

    /// Receives one datagram into `buf` (the excess of a longer one is dropped);
    /// returns its length and sender.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        if self.io.ring_datagrams().is_some() {
            let (n, from) = self.recv_ring(buf).await?;
            return Ok((n, from.ok_or_else(|| io::Error::other("a datagram without a sender's IP address"))?));
        }
        self.io.io(Direction::Read, |s| s.recv_from(buf)).await
    }

    /// Sends `buf` as one datagram to the connected peer.
    pub async fn send(&self, buf: &[u8]) -> io::Result<usize> {
        if self.io.ring_datagrams().is_some() {
            return SendDatagram::new(&self.io, buf, None).await;
        }
        self.io.io(Direction::Write, |s| s.send(buf)).await
    }

    /// Receives one datagram from the connected peer into `buf`; returns its length.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        if self.io.ring_datagrams().is_some() {
            return Ok(self.recv_ring(buf).await?.0);
        }
        self.io.io(Direction::Read, |s| s.recv(buf)).await
    }

    /// On a proactor loop: the ring's next datagram (see [`crate::io::datagrams`]).
    async fn recv_ring(&self, buf: &mut [u8]) -> io::Result<(usize, Option<SocketAddr>)> {
        let io = &self.io;
        let datagrams = io.ring_datagrams().expect("a proactor loop's UDP socket");
        let socket = io.get_ref();
        let now = |out: &mut [u8]| socket.recv_from(out).map(|(n, from)| (n, Some(from)));
        poll_fn(|cx| {
            io.with_ring(cx, |ring, cx| {
                crate::task::coop::poll_budgeted(cx, |cx| datagrams.poll_recv_from(ring, io.fd(), cx, buf, now))
            })
        })
        .await
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()
    }

    /// The connected peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().peer_addr()
    }

    /// Sets `SO_BROADCAST`.
    pub fn set_broadcast(&self, on: bool) -> io::Result<()> {
        self.io.get_ref().set_broadcast(on)
    }

    /// Takes the pending socket error (`SO_ERROR`), if any.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.io.get_ref().take_error()
    }
}

impl fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpSocket")
            .field("local_addr", &self.local_addr().ok())
            .finish()
    }
}

impl AsRawFd for UdpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.io.get_ref().as_raw_fd()
    }
}

impl AsFd for UdpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.get_ref().as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ring's own sends (`SENDMSG`, which the socket takes only when its buffer
    /// is full): to an address, and to the connected peer, whole, from this socket.
    #[test]
    fn a_send_through_the_ring_arrives_whole_from_its_socket() {
        crate::io::on_test_proactor(|_| async {
            let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
            let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
            let to = rx.local_addr().unwrap();
            let long = vec![7u8; 50_000];
            for (bytes, target) in [(&b"to an address"[..], Some(to)), (&long[..], Some(to))] {
                let sent = SendDatagram::through_ring(&tx.io, bytes, target).await.unwrap();
                assert_eq!(sent, bytes.len());
                let mut buf = vec![0u8; 65_536];
                let (n, from) = rx.recv_from(&mut buf).await.unwrap();
                assert_eq!((&buf[..n], from), (bytes, tx.local_addr().unwrap()));
            }
            tx.connect(to).await.unwrap();
            let sent = SendDatagram::through_ring(&tx.io, b"to the peer", None).await.unwrap();
            assert_eq!(sent, 11);
            let mut buf = [0u8; 32];
            let (n, _) = rx.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"to the peer");
        });
    }
}
