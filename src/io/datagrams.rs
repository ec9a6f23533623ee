//! A UDP socket's datagrams on a proactor loop. A socket with nothing to read waits
//! in the ring: the kernel receives into a buffer the socket owns
//! (`IORING_OP_RECVMSG`, with the sender's address), and no readiness poll is armed.
//! Once a datagram came, the ones queued behind it are taken with `recvfrom(2)` at
//! once, until it says there are none; then the ring waits again. Sends go out with
//! the socket's own `sendto(2)` at once, and through the ring (`IORING_OP_SENDMSG`, from a copy of the
//! bytes) only when the socket's buffer is full.
//!
//! Why not the ring for every datagram: a receive of the ring brings one datagram
//! per turn of the loop, and a send of the ring makes its task wait a turn for the
//! completion, where the system call is done at once. Measured on a 32-in-flight UDP
//! echo (`COMPARE_ONLY=udp_echo cargo bench --bench compare`), ring-only datagrams ran
//! at 0.79x the epoll loop (BENCHMARKS.md).
//!
//! A receiver that gives up leaves the ring's receive to the socket: its datagram
//! waits for the next receiver, so none is lost. Each datagram goes to exactly one
//! receiver; one longer than the receiver's buffer is cut to it, as `recvfrom(2)`
//! cuts it.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use io_uring::{opcode, types};
use mio::net::UdpSocket;
use socket2::SockAddr;

use super::ops::{MsgBox, OpKey};
use super::registration::Registered;
use super::uring::UringPoller;

/// Room for the largest UDP payload (IPv6's is 65 527 bytes; a socket takes no more
/// than 65 535).
const MAX_DATAGRAM: usize = 65_535;

/// A received datagram, or what its receive failed with.
struct Received {
    result: i32,
    buf: Vec<u8>,
    msg: MsgBox,
}

#[derive(Default)]
struct RecvState {
    /// The receive in the kernel, if any.
    in_flight: Option<OpKey>,
    /// A datagram received and not taken yet.
    ready: Option<Received>,
    /// The buffer and parts of the last datagram taken, for the next receive.
    spare: Option<(Vec<u8>, MsgBox)>,
    /// A datagram came: more may be queued behind it, taken with `recvfrom(2)`.
    draining: bool,
}

impl RecvState {
    /// Submits a receive into the spare buffer (or a new one).
    fn submit(&mut self, ring: &UringPoller, fd: RawFd) -> io::Result<()> {
        let (mut buf, msg) = self
            .spare
            .take()
            .unwrap_or_else(|| (Vec::with_capacity(MAX_DATAGRAM), MsgBox::new()));
        buf.clear();
        let hdr = point_header(&msg, buf.as_mut_ptr(), buf.capacity(), Name::Fill);
        let entry = opcode::RecvMsg::new(types::Fd(fd), hdr).build();
        // SAFETY: the entry points at `msg.hdr`; the header at `msg.iov` and
        // `msg.addr`, and the iovec at `buf`'s heap block, its whole capacity. The
        // ops table keeps `buf` and `msg` (a box: it does not move) until the
        // completion.
        match unsafe { ring.start_msg_op(entry, buf, msg) } {
            Ok(key) => {
                self.in_flight = Some(key);
                Ok(())
            }
            Err((e, buf, msg)) => {
                self.spare = Some((buf, msg));
                Err(e)
            }
        }
    }
}

/// The address of a message.
enum Name {
    /// A receive's: the whole storage, for the kernel to fill in.
    Fill,
    /// A send's to this address.
    To(SockAddr),
    /// A send's to the connected peer: none.
    Peer,
}

/// Fills `msg` in for one operation: its iovec is `len` bytes at `data`, and its
/// header points at that iovec and at its address (`name`). Returns the header.
/// Every pointer is taken from the box's own raw pointer, so that each stays valid
/// however the box is moved.
fn point_header(msg: &MsgBox, data: *mut u8, len: usize, name: Name) -> *mut libc::msghdr {
    let p = msg.as_ptr();
    // SAFETY: `p` is the box's live, unaliased allocation (no operation is in flight
    // on it: its owner holds it); the writes stay inside it.
    unsafe {
        (*p).iov = libc::iovec {
            iov_base: data.cast(),
            iov_len: len,
        };
        let addr: *mut libc::c_void = std::ptr::addr_of_mut!((*p).addr).cast();
        let (msg_name, msg_namelen) = match name {
            Name::Fill => (addr, std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t),
            Name::To(to) => {
                let len = to.len();
                (*p).addr = to.as_storage();
                (addr, len)
            }
            Name::Peer => (std::ptr::null_mut(), 0),
        };
        let hdr = &mut (*p).hdr;
        hdr.msg_name = msg_name;
        hdr.msg_namelen = msg_namelen;
        hdr.msg_iov = std::ptr::addr_of_mut!((*p).iov);
        hdr.msg_iovlen = 1;
        hdr.msg_control = std::ptr::null_mut();
        hdr.msg_controllen = 0;
        hdr.msg_flags = 0;
        std::ptr::addr_of_mut!((*p).hdr)
    }
}

/// The ring side of a UDP socket (see the module's comment).
#[derive(Default)]
pub(crate) struct RingDatagrams {
    state: RefCell<RecvState>,
}

impl RingDatagrams {
    /// Receives one datagram into `out`: its length (cut to `out`) and sender.
    /// `now` is the socket's own non-blocking receive, for the datagrams queued
    /// behind one the ring brought.
    pub(crate) fn poll_recv_from(
        &self,
        ring: &UringPoller,
        fd: RawFd,
        cx: &mut Context<'_>,
        out: &mut [u8],
        mut now: impl FnMut(&mut [u8]) -> io::Result<(usize, Option<SocketAddr>)>,
    ) -> Poll<io::Result<(usize, Option<SocketAddr>)>> {
        let mut st = self.state.borrow_mut();
        loop {
            if st.draining && st.ready.is_none() && st.in_flight.is_none() {
                match now(out) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => st.draining = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    got => return Poll::Ready(got),
                }
            }
            if let Some(Received {
                result,
                mut buf,
                msg,
            }) = st.ready.take()
            {
                let taken = if result < 0 {
                    Err(io::Error::from_raw_os_error(-result))
                } else {
                    // SAFETY: the kernel wrote `result` bytes at the start of the
                    // buffer (its iovec), so they are initialized.
                    unsafe { buf.set_len(result as usize) };
                    let n = buf.len().min(out.len());
                    out[..n].copy_from_slice(&buf[..n]);
                    Ok((n, sender(&msg)))
                };
                st.spare = Some((buf, msg));
                st.draining = true;
                match taken {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    taken => return Poll::Ready(taken),
                }
            }
            if let Some(key) = st.in_flight {
                let Poll::Ready((result, buf, msg)) = ring.poll_msg_op(key, cx) else {
                    return Poll::Pending;
                };
                st.in_flight = None;
                let msg = msg.expect("a receive's parts come back with it");
                st.ready = Some(Received { result, buf, msg });
                continue;
            }
            st.submit(ring, fd)?;
        }
    }

    /// The socket goes away: cancel the receive in flight, if any.
    pub(crate) fn cancel(&self, ring: &UringPoller) {
        let key = self.state.borrow_mut().in_flight.take();
        if let Some(key) = key {
            ring.cancel_op(key);
        }
    }
}

/// The sender's address a receive filled in (`None` for an address that is not an
/// IP one, which a UDP socket does not get).
fn sender(msg: &MsgBox) -> Option<SocketAddr> {
    let msg = msg.parts();
    // SAFETY: the kernel wrote an address of `msg_namelen` bytes (at most the
    // storage's size, which it was told) into the storage.
    let addr = unsafe { SockAddr::new(msg.addr, msg.hdr.msg_namelen) };
    addr.as_socket()
}

/// Queues a send of `bytes` as one datagram (to `target`, or the connected peer).
pub(crate) fn submit_send(
    ring: &UringPoller,
    fd: RawFd,
    bytes: &[u8],
    target: Option<SocketAddr>,
) -> io::Result<OpKey> {
    let mut buf = bytes.to_vec();
    let msg = MsgBox::new();
    let name = target.map_or(Name::Peer, |to| Name::To(SockAddr::from(to)));
    let hdr = point_header(&msg, buf.as_mut_ptr(), buf.len(), name);
    let entry = opcode::SendMsg::new(types::Fd(fd), hdr)
        .flags(libc::MSG_NOSIGNAL as u32)
        .build();
    // SAFETY: as in `RecvState::submit`: the entry points at `msg.hdr`, the header
    // into `msg` and the iovec at `buf`'s bytes, all kept by the ops table, unmoved,
    // until the completion.
    unsafe { ring.start_msg_op(entry, buf, msg) }.map_err(|(e, _, _)| e)
}

/// The future of a datagram sent through the ring: done when the kernel has sent
/// it (or failed to).
pub(crate) struct SendDatagram<'a> {
    io: &'a Registered<UdpSocket>,
    bytes: &'a [u8],
    target: Option<SocketAddr>,
    /// The send, once submitted.
    key: Option<OpKey>,
    /// Try `sendto(2)` first (always, but in a test of the ring's own sends).
    now_first: bool,
}

impl<'a> SendDatagram<'a> {
    pub(crate) fn new(io: &'a Registered<UdpSocket>, bytes: &'a [u8], target: Option<SocketAddr>) -> Self {
        SendDatagram {
            io,
            bytes,
            target,
            key: None,
            now_first: true,
        }
    }

    /// A send that goes through the ring at once, as one does when the socket's
    /// buffer is full (which loopback, where tests run, never lets happen).
    #[cfg(test)]
    pub(crate) fn through_ring(io: &'a Registered<UdpSocket>, bytes: &'a [u8], target: Option<SocketAddr>) -> Self {
        SendDatagram {
            now_first: false,
            ..Self::new(io, bytes, target)
        }
    }
}

impl Future for SendDatagram<'_> {
    type Output = io::Result<usize>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let (io, bytes, target, key) = (this.io, this.bytes, this.target, &mut this.key);
        let now_first = this.now_first;
        io.with_ring(cx, |ring, cx| {
            let k = match *key {
                Some(k) => k,
                None if !now_first => *key.insert(submit_send(ring, io.fd(), bytes, target)?),
                None => loop {
                    let socket = io.get_ref();
                    let sent = match target {
                        Some(to) => socket.send_to(bytes, to),
                        None => socket.send(bytes),
                    };
                    match sent {
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        // The socket's buffer is full: the ring sends when there is room.
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            break *key.insert(submit_send(ring, io.fd(), bytes, target)?)
                        }
                        sent => return Poll::Ready(sent),
                    }
                },
            };
            let Poll::Ready((result, _, _)) = ring.poll_msg_op(k, cx) else {
                return Poll::Pending;
            };
            *key = None;
            Poll::Ready(match result {
                r if r < 0 => Err(io::Error::from_raw_os_error(-r)),
                r => Ok(r as usize),
            })
        })
    }
}

impl Drop for SendDatagram<'_> {
    /// A send still in the kernel is cancelled (it may have gone out already); its
    /// bytes are freed once the kernel is done with them.
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            if let Some(lp) = self.io.event_loop() {
                if let Some(ring) = lp.inner.reactor.ring() {
                    ring.cancel_op(key);
                }
            }
        }
    }
}
