//! A stream connection (TCP or Unix-domain) driven by callbacks: [`Transport`] and
//! the connection it is a handle to.
//!
//! The data path: an event from the reactor marks the connection readable or
//! writable and queues it in the ready queue; when it runs, it flushes its write
//! buffer if the socket can take more, then reads into the thread's read buffer and
//! calls `data_received` with what came, up to [`READS_PER_TURN`] times.
//!
//! On a proactor loop whose kernel takes provided-buffer rings, the connection
//! receives through the ring instead (see `crate::io::recvs`): one receive waits in
//! the kernel with no buffer of the connection's, its completion marks the
//! connection readable, and its turn hands the bytes to `data_received` and submits
//! the next receive. Writes go through the ring too: what `write` buffers is sent
//! by one `IORING_OP_SEND` at a time, which owns its bytes until its completion
//! (writes meanwhile gather behind it, for the next). The socket is not polled at
//! all then, and a message costs no system call of its own.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::{Rc, Weak};

use mio::Interest;

use super::endpoint::{with_read_buffer, Core, Endpoint};
use super::server::Accepted;
use super::Protocol;
use crate::io::recvs::RecvKey;
use crate::io::submit_send;
use crate::io::OpKey;
use crate::{Error, EventLoop};

/// Reads per turn before the connection yields to the rest of the loop (the
/// cooperative budget of the callback path).
pub(super) const READS_PER_TURN: usize = 16;

/// A write buffer this large (or larger) is freed once it drains, not kept.
const KEPT_BUFFER_CAPACITY: usize = 1 << 20;

/// The connected socket.
pub(super) enum Stream {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
}

impl Stream {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => (&*s).read(buf),
            Stream::Unix(s) => (&*s).read(buf),
        }
    }

    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => (&*s).write(buf),
            Stream::Unix(s) => (&*s).write(buf),
        }
    }

    fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => (&*s).write_vectored(bufs),
            Stream::Unix(s) => (&*s).write_vectored(bufs),
        }
    }

    fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Write),
            Stream::Unix(s) => s.shutdown(Shutdown::Write),
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Stream::Tcp(s) => s.local_addr(),
            Stream::Unix(_) => Err(not_inet()),
        }
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }
}

fn not_inet() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "a unix-domain transport has no IP address",
    )
}

/// One connection: the shared core, the socket, the write buffer.
pub(super) struct Conn {
    core: Core<dyn Protocol>,
    me: Weak<Conn>,
    /// None once closed (after `connection_lost`).
    socket: RefCell<Option<Stream>>,
    peer: Option<SocketAddr>,
    /// Bytes waiting to be written: `out[sent..]`.
    out: RefCell<Vec<u8>>,
    sent: Cell<usize>,
    /// The end of the stream was read.
    eof_seen: Cell<bool>,
    /// `write_eof` was called: shut the write side down once the buffer drains.
    eof_wanted: Cell<bool>,
    /// The connection's slot for receives through the ring, on a proactor loop
    /// that has them (else it reads when the socket polls readable).
    ring_recv: Cell<Option<RecvKey>>,
    /// The connection sends through the ring (it receives through it too).
    by_ring: bool,
    /// The send in the kernel, and how many bytes it has (they count as buffered).
    sending: Cell<Option<(OpKey, usize)>>,
    /// The buffer the last send gave back, for the next writes.
    spare: RefCell<Vec<u8>>,
}

/// What one read came to.
enum Read1 {
    /// Data, and the socket may have more.
    More,
    /// Data, less than asked: the socket is empty now.
    Short,
    Drained,
    Eof,
    Failed(io::Error),
}

impl Conn {
    /// Registers `socket` with `lp` as a connection of `protocol`, and calls
    /// `connection_made`. The transport it returns is already closing if that
    /// panicked. `attach` sees the transport first (a server counts it there, so
    /// that `connection_made` finds it counted, as asyncio's `_attach` comes first).
    pub(super) fn start(
        lp: &EventLoop,
        socket: Stream,
        peer: Option<SocketAddr>,
        protocol: Rc<RefCell<dyn Protocol>>,
        name: &'static str,
        attach: impl FnOnce(&Transport),
    ) -> io::Result<Transport> {
        if lp.is_closed() {
            return Err(Error::Closed.into());
        }
        let fd = socket.as_raw_fd();
        let ring = lp.inner.reactor.ring();
        let ring_recv = ring.and_then(|ring| ring.new_recv());
        let conn = Rc::new_cyclic(|me| Conn {
            core: Core::new(lp, protocol, name),
            me: me.clone(),
            socket: RefCell::new(Some(socket)),
            peer,
            out: RefCell::new(Vec::new()),
            sent: Cell::new(0),
            eof_seen: Cell::new(false),
            eof_wanted: Cell::new(false),
            ring_recv: Cell::new(ring_recv),
            by_ring: ring_recv.is_some(),
            sending: Cell::new(None),
            spare: RefCell::new(Vec::new()),
        });
        // Through the ring, errors come as the receive's or the send's result.
        let interest = match ring_recv {
            Some(_) => None,
            None => Some(Interest::READABLE | Interest::WRITABLE),
        };
        let token = match lp.inner.reactor.register_sink(fd, interest, conn.clone()) {
            Ok(token) => token,
            Err(e) => {
                conn.stop_receiving();
                return Err(e);
            }
        };
        conn.core.token.set(Some(token));
        if let (Some(ring), Some(key)) = (ring, ring_recv) {
            ring.set_recv_sink(key, token);
            // The first turn submits the first receive.
            conn.core.readable.set(true);
        }
        let transport = Transport { conn };
        attach(&transport);
        let handle = transport.clone();
        transport
            .conn
            .call("connection_made", |p| p.connection_made(handle));
        if ring_recv.is_some() && transport.conn.reading() {
            transport.conn.requeue();
        }
        Ok(transport)
    }

    /// Gives the connection's receive slot back to the ring, its receive cancelled.
    fn stop_receiving(&self) {
        let Some(key) = self.ring_recv.take() else {
            return;
        };
        if let Some(lp) = self.core.event_loop() {
            if let Some(ring) = lp.inner.reactor.ring() {
                ring.stop_recv(key);
            }
        }
    }

    /// Cancels the ring's send in the kernel, if there is one (an abort: what it
    /// did not send is dropped). Its buffer is freed once the kernel answers.
    fn cancel_send(&self) {
        let Some((key, _)) = self.sending.take() else {
            return;
        };
        if let Some(lp) = self.core.event_loop() {
            if let Some(ring) = lp.inner.reactor.ring() {
                ring.cancel_op(key);
            }
        }
    }

    /// Hands what the ring received to `data_received`, up to the turn's budget;
    /// requeues itself if the budget runs out first.
    fn receive_and_deliver(&self, key: RecvKey) {
        let Some(lp) = self.core.event_loop() else {
            return;
        };
        let Some(ring) = lp.inner.reactor.ring() else {
            return;
        };
        self.deliver_for_a_turn(|| {
            let Some(fd) = self.socket.borrow().as_ref().map(|s| s.as_raw_fd()) else {
                return Read1::Drained;
            };
            with_read_buffer(|buf| {
                let mut got = 0;
                let taken = ring.take_recv(key, fd, buf.len(), &mut |bytes| {
                    got = bytes.len().min(buf.len());
                    buf[..got].copy_from_slice(&bytes[..got]);
                    got
                });
                match taken {
                    None => Read1::Drained,
                    Some(Ok(0)) => Read1::Eof,
                    Some(Ok(n)) => {
                        // No borrow of the ring is held: the protocol may write or close.
                        self.call("data_received", |p| p.data_received(&buf[..n]));
                        Read1::More
                    }
                    Some(Err(e)) if e.kind() == io::ErrorKind::Interrupted => Read1::More,
                    Some(Err(e)) => Read1::Failed(e),
                }
            })
        });
    }

    fn read_once(&self, buf: &mut [u8]) -> Read1 {
        let r = match self.socket.borrow().as_ref() {
            Some(s) => s.read(buf),
            None => return Read1::Drained,
        };
        match r {
            Ok(0) => Read1::Eof,
            Ok(n) => {
                // The socket borrow is over: the protocol may write or close.
                self.call("data_received", |p| p.data_received(&buf[..n]));
                if n < buf.len() {
                    Read1::Short
                } else {
                    Read1::More
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Read1::Drained,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Read1::More,
            Err(e) => Read1::Failed(e),
        }
    }

    /// Reads and delivers, up to the turn's budget; requeues itself if the socket
    /// may still have data when the budget runs out.
    fn read_and_deliver(&self) {
        self.deliver_for_a_turn(|| with_read_buffer(|buf| self.read_once(buf)));
    }

    /// Reads with `read_one` and delivers, up to the turn's budget; requeues itself
    /// if there may be more when the budget runs out.
    fn deliver_for_a_turn(&self, mut read_one: impl FnMut() -> Read1) {
        for _ in 0..READS_PER_TURN {
            if !self.reading() {
                return;
            }
            match read_one() {
                Read1::More => {}
                // Past the peer's shutdown no edge would come: read on to the end.
                Read1::Short if self.core.read_closed.get() => {}
                Read1::Short | Read1::Drained => {
                    self.core.readable.set(false);
                    return;
                }
                Read1::Eof => return self.on_eof(),
                Read1::Failed(e) => return self.fatal(e),
            }
        }
        if self.reading() && self.core.readable.get() {
            self.requeue();
        }
    }

    /// asyncio's `_read_ready__on_eof`: the protocol keeps the transport half-open
    /// (for writing) or it is closed.
    fn on_eof(&self) {
        self.eof_seen.set(true);
        if self.call("eof_received", |p| p.eof_received()) == Some(false) {
            self.close();
        }
    }

    /// Sends what it can of `chunks` now; the number of bytes sent.
    fn send_now(&self, chunks: &[&[u8]]) -> io::Result<usize> {
        let socket = self.socket.borrow();
        let Some(s) = socket.as_ref() else {
            return Ok(0);
        };
        loop {
            let r = match chunks {
                [one] => s.write(one),
                _ => {
                    let slices: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
                    s.write_vectored(&slices)
                }
            };
            match r {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// asyncio's `write`: send at once if nothing waits, buffer the rest.
    fn write_chunks(&self, chunks: &[&[u8]]) {
        let total: usize = chunks.iter().map(|c| c.len()).sum();
        if total == 0 {
            return;
        }
        if self.eof_wanted.get() {
            log::warn!(
                "write() after write_eof() on the transport of {}: the data is dropped",
                self.core.name
            );
            return;
        }
        if self.core.is_lost() {
            self.core.write_after_lost();
            return;
        }
        if self.by_ring {
            let mut out = self.out.borrow_mut();
            for chunk in chunks {
                out.extend_from_slice(chunk);
            }
            drop(out);
            let running = self.core.event_loop().is_some_and(|lp| lp.is_running());
            let sent = if running { self.send_by_ring() } else { self.settle_sends() };
            if let Err(e) = sent {
                return self.fatal(e);
            }
            return self.maybe_pause();
        }
        let mut skip = 0;
        if self.buffered() == 0 {
            match self.send_now(chunks) {
                Ok(n) => skip = n,
                Err(e) => return self.fatal(e),
            }
            if skip == total {
                return;
            }
            // Short: the socket is full, a writable edge will say when it is not.
            self.core.writable.set(false);
        }
        let mut out = self.out.borrow_mut();
        for chunk in chunks {
            let from = skip.min(chunk.len());
            skip -= from;
            out.extend_from_slice(&chunk[from..]);
        }
        drop(out);
        self.maybe_pause();
    }

    /// Writes the buffer until the socket is full or the buffer empty; then tells
    /// the protocol, and finishes a close or a `write_eof` waiting for the drain.
    fn flush(&self) {
        let result = self.write_buffered();
        if let Err(e) = result {
            return self.fatal(e);
        }
        self.maybe_resume();
        if self.buffered() == 0 {
            if self.core.closing.get() {
                self.schedule_lost(None);
            } else if self.eof_wanted.get() {
                self.shutdown_write();
            }
        }
    }

    /// Sends what `out` holds with one ring send, unless one is in the kernel
    /// already (its completion sends what gathered meanwhile).
    fn send_by_ring(&self) -> io::Result<()> {
        if self.sending.get().is_some() || self.out.borrow().is_empty() {
            return Ok(());
        }
        let (Some(lp), Some(token)) = (self.core.event_loop(), self.core.token.get()) else {
            return Ok(());
        };
        let Some(fd) = self.socket.borrow().as_ref().map(|s| s.as_raw_fd()) else {
            return Ok(());
        };
        let ring = lp.inner.reactor.ring().expect("a ring transport is on a proactor loop");
        let spare = self.spare.take();
        let buf = std::mem::replace(&mut *self.out.borrow_mut(), spare);
        let len = buf.len();
        match submit_send(ring, fd, buf, 0, Some(token)) {
            Ok(key) => {
                self.sending.set(Some((key, len)));
                if !lp.is_running() {
                    // No turn of the loop's is coming to submit it: a write made
                    // outside the loop goes out now, as one on epoll does.
                    ring.submit_queued();
                }
                Ok(())
            }
            Err((e, buf)) => {
                *self.out.borrow_mut() = buf;
                Err(e)
            }
        }
    }

    /// Sends what `out` holds while the loop does not run (a write from outside it,
    /// or the loop closing), where no turn of the loop's will collect what the kernel
    /// finished: each send is submitted at once and collected as soon as it is done,
    /// until all is sent or a send stays in the kernel.
    fn settle_sends(&self) -> io::Result<()> {
        let Some(lp) = self.core.event_loop() else {
            return Ok(());
        };
        let Some(ring) = lp.inner.reactor.ring() else {
            return Ok(());
        };
        loop {
            let before = self.buffered();
            if self.sending.get().is_none() {
                self.send_by_ring()?;
                if self.sending.get().is_none() {
                    return Ok(());
                }
            }
            ring.reap_completions();
            self.sent_by_ring()?;
            // Each round sends something, or stops.
            if self.buffered() == before {
                return Ok(());
            }
        }
    }

    /// The ring's send completed (or not yet: nothing): the bytes it did not send
    /// go out again first, then what gathered behind it.
    fn sent_by_ring(&self) -> io::Result<()> {
        let Some((key, len)) = self.sending.get() else {
            return Ok(());
        };
        let Some(lp) = self.core.event_loop() else {
            return Ok(());
        };
        let ring = lp.inner.reactor.ring().expect("a ring transport is on a proactor loop");
        let Some((result, mut buf)) = ring.take_done_op(key) else {
            // Its completion reports the transport writable again.
            self.core.writable.set(false);
            return Ok(());
        };
        self.sending.set(None);
        if result < 0 {
            return Err(io::Error::from_raw_os_error(-result));
        }
        let sent = (result as usize).min(len);
        if sent < len {
            // Short (past u32::MAX bytes, or a send that MSG_WAITALL could not
            // finish: a signal, an error after some bytes): the rest first.
            buf.drain(..sent);
            buf.append(&mut self.out.borrow_mut());
            *self.out.borrow_mut() = buf;
        } else {
            buf.clear();
            if buf.capacity() < KEPT_BUFFER_CAPACITY {
                *self.spare.borrow_mut() = buf;
            }
        }
        self.send_by_ring()
    }

    fn write_buffered(&self) -> io::Result<()> {
        if self.by_ring {
            return self.sent_by_ring();
        }
        let socket = self.socket.borrow();
        let Some(s) = socket.as_ref() else {
            return Ok(());
        };
        let mut out = self.out.borrow_mut();
        let mut sent = self.sent.get();
        while sent < out.len() {
            match s.write(&out[sent..]) {
                Ok(n) => {
                    let short = sent + n < out.len();
                    sent += n;
                    if short {
                        self.core.writable.set(false);
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.core.writable.set(false);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if sent == out.len() {
            out.clear();
            if out.capacity() >= KEPT_BUFFER_CAPACITY {
                *out = Vec::new();
            }
            sent = 0;
        } else if sent > out.len() / 2 {
            out.drain(..sent);
            sent = 0;
        }
        self.sent.set(sent);
        Ok(())
    }

    fn shutdown_write(&self) {
        let r = match self.socket.borrow().as_ref() {
            Some(s) => s.shutdown_write(),
            None => Ok(()),
        };
        match r {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => self.fatal(e),
            _ => {}
        }
    }

}

impl Drop for Conn {
    /// A connection dropped without closing its socket (its registration failed)
    /// still gives its receive slot and its send back.
    fn drop(&mut self) {
        self.stop_receiving();
        self.cancel_send();
    }
}

impl Endpoint for Conn {
    type Proto = dyn Protocol;

    fn core(&self) -> &Core<dyn Protocol> {
        &self.core
    }

    fn me(&self) -> Option<Rc<Self>> {
        self.me.upgrade()
    }

    fn buffered(&self) -> usize {
        let sending = self.sending.get().map_or(0, |(_, len)| len);
        self.out.borrow().len() - self.sent.get() + sending
    }

    fn has_pending_writes(&self) -> bool {
        self.buffered() > 0
    }

    fn settle_writes(&self) {
        if self.by_ring {
            if let Err(e) = self.settle_sends() {
                self.fatal(e);
            }
        }
    }

    fn discard_buffer(&self) {
        *self.out.borrow_mut() = Vec::new();
        self.sent.set(0);
        self.cancel_send();
    }

    fn take_socket(&self) -> Option<Box<dyn AsRawFd>> {
        // The ring's operations go first: it lets go of the socket before it
        // closes.
        self.stop_receiving();
        self.cancel_send();
        let socket = self.socket.borrow_mut().take()?;
        Some(Box::new(socket))
    }

    fn reading(&self) -> bool {
        self.core.reading() && !self.eof_seen.get()
    }

    fn write_ready(&self) {
        self.flush();
    }

    fn read_ready(&self) {
        match self.ring_recv.get() {
            Some(key) => self.receive_and_deliver(key),
            None => self.read_and_deliver(),
        }
    }
}

/// asyncio's stream transport: how a [`Protocol`] writes to and closes its
/// connection. A cheap `Clone` handle (an `Rc` inside), `!Send`.
///
/// `write` sends at once when nothing is buffered and buffers what the socket did
/// not take; the buffer drains as the socket becomes writable, and its size drives
/// the protocol's `pause_writing` / `resume_writing`
/// ([`set_write_buffer_limits`](Self::set_write_buffer_limits)). On a proactor
/// loop, `write` hands the bytes to a send through the ring, submitted with the
/// loop's next batch; until it completes they count in
/// [`get_write_buffer_size`](Self::get_write_buffer_size), as in asyncio's
/// proactor transports. See the
/// [module docs](crate::protocol) for an example and the rules.
#[derive(Clone)]
pub struct Transport {
    conn: Rc<Conn>,
}

impl Transport {
    /// A reference to the connection that does not keep it alive.
    pub(super) fn downgrade(&self) -> Weak<Conn> {
        Rc::downgrade(&self.conn)
    }

    /// The transport of a connection still alive.
    pub(super) fn upgrade(conn: &Weak<Conn>) -> Option<Transport> {
        conn.upgrade().map(|conn| Transport { conn })
    }

    /// Counts this connection for the server that accepted it, until its
    /// `connection_lost` is delivered (at once if it was already).
    pub(super) fn count_for(&self, accepted: Accepted) {
        let core = &self.conn.core;
        if core.is_delivered() {
            return drop(accepted);
        }
        *core.accepted.borrow_mut() = Some(accepted);
    }

    /// Writes `data`: at once if nothing is buffered, the rest when the socket can
    /// take it. After `close` (before the buffer drained) it is still sent; after
    /// the connection was lost it is dropped (logged once it keeps happening);
    /// after [`write_eof`](Self::write_eof) it is dropped with a warning.
    pub fn write(&self, data: &[u8]) {
        self.conn.write_chunks(&[data]);
    }

    /// Writes each buffer in turn, with one vectored send when nothing is buffered.
    pub fn writelines(&self, data: &[&[u8]]) {
        self.conn.write_chunks(data);
    }

    /// Shuts the write side down once the buffer has drained (the peer reads end of
    /// stream); reading goes on.
    ///
    /// ```
    /// # use shardloop::{Protocol, Transport};
    /// struct Once;
    /// impl Protocol for Once {
    ///     fn connection_made(&mut self, t: Transport) {
    ///         assert!(t.can_write_eof());
    ///         t.write(b"last words");
    ///         t.write_eof();
    ///     }
    ///     fn data_received(&mut self, _data: &[u8]) {}
    /// }
    /// ```
    pub fn write_eof(&self) {
        let conn = &self.conn;
        if conn.core.closing.get() || conn.eof_wanted.replace(true) {
            return;
        }
        if conn.buffered() == 0 {
            conn.shutdown_write();
        }
    }

    /// Whether [`write_eof`](Self::write_eof) is supported: always, for streams.
    pub fn can_write_eof(&self) -> bool {
        true
    }

    /// Closes the transport: reading stops now; once the write buffer has been
    /// sent, `connection_lost(None)` is called (on a later iteration) and the socket
    /// closed. Closing twice does nothing.
    pub fn close(&self) {
        self.conn.close();
    }

    /// Closes the transport at once: the write buffer is dropped, and
    /// `connection_lost(None)` is called on a later iteration.
    pub fn abort(&self) {
        self.conn.force_close(None);
    }

    /// Whether the transport is closing or closed.
    pub fn is_closing(&self) -> bool {
        self.conn.core.closing.get()
    }

    /// Stops calling `data_received` until [`resume_reading`](Self::resume_reading)
    /// (the socket is not read meanwhile, so the peer is held back by TCP flow
    /// control). Nothing if closing or paused already.
    pub fn pause_reading(&self) {
        let core = &self.conn.core;
        if !core.closing.get() {
            core.reading_paused.set(true);
        }
    }

    /// Reading goes on: data that came while paused is delivered on the next
    /// iteration.
    pub fn resume_reading(&self) {
        let core = &self.conn.core;
        if core.closing.get() || !core.reading_paused.replace(false) {
            return;
        }
        if core.readable.get() && self.conn.reading() {
            self.conn.requeue();
        }
    }

    /// Whether the transport is reading (not paused, not closing, end of stream not
    /// reached).
    pub fn is_reading(&self) -> bool {
        self.conn.reading()
    }

    /// Bytes written but not sent yet (on a proactor, those of the send in the
    /// kernel too).
    pub fn get_write_buffer_size(&self) -> usize {
        self.conn.buffered()
    }

    /// Sets the write buffer's marks: `pause_writing` is called when the buffer
    /// grows over `high` bytes, `resume_writing` when it drains to `low` (asyncio's
    /// defaults: 64 KiB and 16 KiB). `Err(Error::Io(InvalidInput))` if
    /// `low > high`.
    pub fn set_write_buffer_limits(&self, high: usize, low: usize) -> Result<(), Error> {
        self.conn.set_limits(high, low)
    }

    /// The write buffer's marks: `(low, high)`, asyncio's order.
    pub fn get_write_buffer_limits(&self) -> (usize, usize) {
        let (high, low) = self.conn.core.limits();
        (low, high)
    }

    /// The remote address (kept from the connection's start, so it is there after
    /// close too). For a Unix-domain transport: `Err(InvalidInput)`.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.conn.peer.ok_or_else(not_inet)
    }

    /// The local address; `Err(NotConnected)` once the socket is closed, and
    /// `Err(InvalidInput)` for a Unix-domain transport.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self.conn.socket.borrow().as_ref() {
            Some(s) => s.local_addr(),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// A Unix-domain transport's remote address (asyncio's
    /// `get_extra_info('peername')`): a server's path for a client's transport,
    /// unnamed for a server's. `Err(NotConnected)` once closed, `Err(InvalidInput)`
    /// for a TCP transport.
    pub fn unix_peer_addr(&self) -> io::Result<std::os::unix::net::SocketAddr> {
        self.unix(|s| s.peer_addr())
    }

    /// A Unix-domain transport's local address (asyncio's
    /// `get_extra_info('sockname')`): the path it listens on for a server's
    /// transport. Errors as [`unix_peer_addr`](Self::unix_peer_addr).
    pub fn unix_local_addr(&self) -> io::Result<std::os::unix::net::SocketAddr> {
        self.unix(|s| s.local_addr())
    }

    fn unix<R>(&self, f: impl FnOnce(&mio::net::UnixStream) -> io::Result<R>) -> io::Result<R> {
        match self.conn.socket.borrow().as_ref() {
            Some(Stream::Unix(s)) => f(s),
            Some(Stream::Tcp(_)) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a TCP transport has no unix-domain address",
            )),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("protocol", &self.conn.core.name)
            .field("peer_addr", &self.conn.peer)
            .field("closing", &self.is_closing())
            .field("buffered", &self.get_write_buffer_size())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::io::Write;
    use std::rc::Rc;
    use std::time::Duration;

    use crate::io::{lent, on_test_proactor, pattern, rounds, until, BUFFER_SIZE};
    use crate::{EventLoop, Protocol, Transport};

    /// Keeps what it receives; echoes it if `echo`; pauses reading at once if
    /// `paused`.
    #[derive(Default)]
    struct Keep {
        got: Rc<RefCell<Vec<u8>>>,
        transport: Rc<RefCell<Option<Transport>>>,
        echo: bool,
        paused: bool,
    }

    impl Protocol for Keep {
        fn connection_made(&mut self, t: Transport) {
            if self.paused {
                t.pause_reading();
            }
            *self.transport.borrow_mut() = Some(t);
        }
        fn data_received(&mut self, data: &[u8]) {
            self.got.borrow_mut().extend_from_slice(data);
            if self.echo {
                self.transport.borrow().as_ref().unwrap().write(data);
            }
        }
    }

    fn ring_receives(lp: &EventLoop) -> Option<usize> {
        let ring = lp.inner.reactor.ring()?;
        ring.receives_into_ring_buffers().then(|| ring.receives())
    }

    /// On a proactor, both ends of a connection receive through the ring (a slot
    /// each, given back when the connection is lost), and a megabyte echoed there
    /// and back arrives whole and in order: buffers filled to the brim are followed
    /// by `recv(2)`s into the transport's read buffer.
    #[test]
    fn a_proactor_transport_receives_through_the_ring_in_order() {
        on_test_proactor(|lp| async move {
            if ring_receives(&lp).is_none() {
                return eprintln!("skipped: no provided-buffer rings here");
            }
            let before = ring_receives(&lp).unwrap();
            let server = lp.create_server(|| Keep { echo: true, ..Keep::default() }, "127.0.0.1:0").await.unwrap();
            let got = Rc::new(RefCell::new(Vec::new()));
            let keep = Keep { got: got.clone(), ..Keep::default() };
            let (client, _) = lp.create_connection(move || keep, server.local_addr().unwrap()).await.unwrap();
            until(|| ring_receives(&lp) == Some(before + 2)).await;
            let sent = pattern(1 << 20);
            for chunk in sent.chunks(100_000) {
                client.write(chunk);
            }
            until(|| got.borrow().len() >= sent.len()).await;
            assert!(*got.borrow() == sent, "the echo came back out of order or changed");
            client.close();
            server.close();
            server.wait_closed().await;
            until(|| ring_receives(&lp) == Some(before)).await;
        });
    }

    /// A transport paused from `connection_made` delivers nothing while a peer
    /// writes 4 MiB, and holds at most one ring buffer's bytes meanwhile (the rest
    /// waits in the kernel, held back by TCP); resumed, it delivers all of it in
    /// order.
    #[test]
    fn a_paused_proactor_transport_holds_one_buffer_and_resumes_in_order() {
        on_test_proactor(|lp| async move {
            if ring_receives(&lp).is_none() {
                return eprintln!("skipped: no provided-buffer rings here");
            }
            let got = Rc::new(RefCell::new(Vec::new()));
            let transport = Rc::new(RefCell::new(None));
            let (g, t) = (got.clone(), transport.clone());
            let keep = move || Keep { got: g.clone(), transport: t.clone(), paused: true, ..Keep::default() };
            let server = lp.create_server(keep, "127.0.0.1:0").await.unwrap();
            let addr = server.local_addr().unwrap();
            let sent = pattern(4 << 20);
            let to_send = sent.clone();
            let writer = std::thread::spawn(move || {
                let mut peer = std::net::TcpStream::connect(addr).unwrap();
                peer.write_all(&to_send).unwrap();
            });
            until(|| transport.borrow().is_some()).await;
            assert_eq!(ring_receives(&lp), Some(1), "the transport has no receive slot");
            for _ in 0..50 {
                crate::time::sleep(Duration::from_millis(2)).await;
                let queued = lp.inner.reactor.ring().unwrap().queued_by_recvs();
                assert!(queued <= BUFFER_SIZE, "{queued} bytes queued for a paused transport");
            }
            assert!(got.borrow().is_empty(), "data_received was called while paused");
            transport.borrow().as_ref().unwrap().resume_reading();
            until(|| got.borrow().len() >= sent.len()).await;
            writer.join().unwrap();
            assert!(*got.borrow() == sent, "the bytes came out of order or changed");
            server.close();
        });
    }

    /// A [`slow_peer`]'s `go` and thread.
    type SlowPeer = (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<Vec<u8>>);

    /// Connects a peer from a thread, which reads nothing until `go` says so, then
    /// reads to EOF and returns what it read (nothing if `go` is dropped instead).
    fn slow_peer(addr: std::net::SocketAddr) -> SlowPeer {
        let (go, wait) = std::sync::mpsc::channel();
        let peer = std::thread::spawn(move || {
            let mut peer = std::net::TcpStream::connect(addr).unwrap();
            let mut got = Vec::new();
            if wait.recv().is_ok() {
                std::io::Read::read_to_end(&mut peer, &mut got).unwrap();
            }
            got
        });
        (go, peer)
    }

    /// A server's transport to a [`slow_peer`], with the server, the peer's `go` and
    /// the peer; none where the ring has no provided buffers (no ring sends).
    async fn transport_to_slow_peer(lp: &EventLoop) -> Option<(crate::Server, Transport, SlowPeer)> {
        ring_receives(lp)?;
        let transport = Rc::new(RefCell::new(None));
        let t = transport.clone();
        let keep = move || Keep { transport: t.clone(), ..Keep::default() };
        let server = lp.create_server(keep, "127.0.0.1:0").await.unwrap();
        let peer = slow_peer(server.local_addr().unwrap());
        until(|| transport.borrow().is_some()).await;
        let t = transport.borrow().clone().unwrap();
        Some((server, t, peer))
    }

    /// On a proactor with ring receives, a transport's writes go to the kernel as
    /// ring sends: none is written at once, so all of it counts as buffered
    /// (asyncio's proactor transports count bytes in flight too); while a send is in
    /// the kernel the writes gather behind it; the peer gets every byte in order,
    /// and the buffer is empty once the sends complete.
    #[test]
    fn a_proactor_transport_sends_through_the_ring_in_order() {
        on_test_proactor(|lp| async move {
            let Some((server, t, (go, peer))) = transport_to_slow_peer(&lp).await else {
                return eprintln!("skipped: no provided-buffer rings here");
            };
            let sent = pattern(4 << 20);
            for chunk in sent.chunks(64 << 10) {
                t.write(chunk);
            }
            assert_eq!(t.get_write_buffer_size(), sent.len(), "a ring transport wrote at once");
            until(|| lent(&lp) > 0).await;
            assert!(lent(&lp) < sent.len(), "more than the first send is in the kernel at once");
            go.send(()).unwrap();
            until(|| t.get_write_buffer_size() == 0).await;
            assert_eq!(lent(&lp), 0, "a completed send still holds its buffer");
            t.close();
            until(|| peer.is_finished()).await;
            assert!(peer.join().unwrap() == sent, "the peer got the bytes out of order or changed");
            server.close();
        });
    }

    /// Aborting a transport whose send waits in the kernel (the peer reads
    /// nothing) cancels it: the ring frees the send's buffer, and the transport is
    /// closed.
    #[test]
    fn aborting_a_proactor_transport_cancels_its_send_in_the_kernel() {
        on_test_proactor(|lp| async move {
            let Some((server, t, (go, peer))) = transport_to_slow_peer(&lp).await else {
                return eprintln!("skipped: no provided-buffer rings here");
            };
            t.write(&[1; 100]);
            t.write(&pattern(16 << 20));
            // The second send, which the socket's buffer cannot take, is in the kernel.
            until(|| lent(&lp) >= 1 << 20).await;
            t.abort();
            assert!(t.is_closing());
            assert_eq!(t.get_write_buffer_size(), 0, "an abort keeps what was not sent");
            until(|| lent(&lp) == 0).await;
            drop(go);
            until(|| peer.is_finished()).await;
            assert!(peer.join().unwrap().is_empty());
            server.close();
        });
    }

    /// Transports aborted at every point of their sends (before the first is
    /// submitted, while one is in the kernel, between two), 200 rounds of sizes
    /// from a byte to a megabyte: every send's buffer is given back, every receive
    /// slot too, and every transport's `connection_lost` comes, with no error.
    #[test]
    fn proactor_transports_aborted_at_any_point_of_a_send_give_their_buffers_back() {
        on_test_proactor(|lp| async move {
            let Some(receives) = ring_receives(&lp) else {
                return eprintln!("skipped: no provided-buffer rings here");
            };
            let server = lp.create_server(|| Keep { echo: true, ..Keep::default() }, "127.0.0.1:0").await.unwrap();
            let addr = server.local_addr().unwrap();
            let mut ends = Vec::new();
            for seed in rounds(0x9e37_79b9, 200) {
                let end = Rc::new(RefCell::new(None));
                let e = end.clone();
                let (t, _) = lp.create_connection(move || Ends(e), addr).await.unwrap();
                ends.push(end);
                t.write(&pattern(1 + seed as usize % (1 << 20)));
                for _ in 0..seed % 4 {
                    crate::task::yield_now().await;
                }
                t.write(&[7; 100]);
                for _ in 0..(seed >> 8) % 3 {
                    crate::time::sleep(Duration::from_micros(200)).await;
                }
                t.abort();
            }
            until(|| ends.iter().all(|e| e.borrow().is_some())).await;
            assert!(ends.iter().all(|e| *e.borrow() == Some(None)), "an abort ended with an error");
            server.close();
            server.close_clients();
            until(|| lent(&lp) == 0).await;
            until(|| ring_receives(&lp) == Some(receives)).await;
        });
    }

    /// Records how its connection ended.
    struct Ends(Rc<RefCell<Option<Option<String>>>>);

    impl Protocol for Ends {
        fn connection_made(&mut self, _: Transport) {}
        fn data_received(&mut self, _: &[u8]) {}
        fn connection_lost(&mut self, err: Option<std::io::Error>) {
            *self.0.borrow_mut() = Some(err.map(|e| e.to_string()));
        }
    }

    /// A ring transport written to while its loop does not run sends at once (the
    /// peer, a blocking socket on this thread, reads it with the loop stopped), and
    /// one closed after its last write ends with `connection_lost(None)` when the
    /// loop then closes, not with the loop's error: that send completed, its
    /// completion unread.
    #[test]
    fn a_proactor_transport_used_outside_its_loop_sends_and_ends_cleanly() {
        let Some(lp) = crate::io::test_proactor() else {
            return;
        };
        if ring_receives(&lp).is_none() {
            return eprintln!("skipped: no provided-buffer rings here");
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ended = Rc::new(RefCell::new(None));
        let e = ended.clone();
        let connect = lp.create_connection(move || Ends(e), listener.local_addr().unwrap());
        let (t, _) = lp.run_until_complete(connect).unwrap().unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        t.write(b"outside");
        let mut got = [0; 7];
        std::io::Read::read_exact(&mut peer, &mut got).expect("the write did not go out");
        assert_eq!(&got, b"outside");
        // Twice, so that the second write finds the first's send done but not read.
        t.write(b"by");
        t.write(b"e");
        t.close();
        lp.close().unwrap();
        assert_eq!(*ended.borrow(), Some(None), "connection_lost was not called with None");
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut peer, &mut rest).unwrap();
        assert_eq!(rest, b"bye");
    }
}
