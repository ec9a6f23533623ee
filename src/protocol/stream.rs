//! A stream connection (TCP or Unix-domain) driven by callbacks: [`Transport`] and
//! the connection it is a handle to.
//!
//! The data path: an event from the reactor marks the connection readable or
//! writable and queues it in the ready queue; when it runs, it flushes its write
//! buffer if the socket can take more, then reads into the thread's read buffer and
//! calls `data_received` with what came, up to [`READS_PER_TURN`] times.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::{Rc, Weak};

use mio::Interest;

use super::server::Accepted;
use super::endpoint::{with_read_buffer, Core, Endpoint};
use super::Protocol;
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
        let conn = Rc::new_cyclic(|me| Conn {
            core: Core::new(lp, protocol, name),
            me: me.clone(),
            socket: RefCell::new(Some(socket)),
            peer,
            out: RefCell::new(Vec::new()),
            sent: Cell::new(0),
            eof_seen: Cell::new(false),
            eof_wanted: Cell::new(false),
        });
        let token = lp.inner.reactor.register_sink(
            fd,
            Interest::READABLE | Interest::WRITABLE,
            conn.clone(),
        )?;
        conn.core.token.set(Some(token));
        let transport = Transport { conn };
        attach(&transport);
        let handle = transport.clone();
        transport
            .conn
            .call("connection_made", |p| p.connection_made(handle));
        Ok(transport)
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
        for _ in 0..READS_PER_TURN {
            if !self.reading() {
                return;
            }
            match with_read_buffer(|buf| self.read_once(buf)) {
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

    fn write_buffered(&self) -> io::Result<()> {
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

impl Endpoint for Conn {
    type Proto = dyn Protocol;

    fn core(&self) -> &Core<dyn Protocol> {
        &self.core
    }

    fn me(&self) -> Option<Rc<Self>> {
        self.me.upgrade()
    }

    fn buffered(&self) -> usize {
        self.out.borrow().len() - self.sent.get()
    }

    fn has_pending_writes(&self) -> bool {
        self.buffered() > 0
    }

    fn discard_buffer(&self) {
        *self.out.borrow_mut() = Vec::new();
        self.sent.set(0);
    }

    fn take_socket(&self) -> Option<Box<dyn AsRawFd>> {
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
        self.read_and_deliver();
    }
}

/// asyncio's stream transport: how a [`Protocol`] writes to and closes its
/// connection. A cheap `Clone` handle (an `Rc` inside), `!Send`.
///
/// `write` sends at once when nothing is buffered and buffers what the socket did
/// not take; the buffer drains as the socket becomes writable, and its size drives
/// the protocol's `pause_writing` / `resume_writing`
/// ([`set_write_buffer_limits`](Self::set_write_buffer_limits)). See the
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

    /// Bytes written but not sent yet.
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
