//! [`StreamWriter`]: asyncio's `StreamWriter`, over the write side of a socket.
//!
//! The writer is its own transport: `write` sends what the socket takes at once
//! and buffers the rest, and a flusher task (spawned when there is a rest, gone
//! once the buffer is empty) sends the buffer in the background, as asyncio's
//! transport does from its writer callback. `drain` only waits for the flusher to
//! bring the buffer down (asyncio's `FlowControlMixin`). Closing and half-closing
//! happen once the buffer is out.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::Shutdown;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll};

use super::socket::StreamSocket;
use super::{spawn_on, Connection};
use crate::net::TcpStream;
use crate::sync::Event;
use crate::Error;

/// The default high-water mark of the write buffer (asyncio's: 64 KiB).
pub const DEFAULT_HIGH_WATER: usize = 64 * 1024;
/// The default low-water mark (asyncio's: a quarter of the high one, 16 KiB).
pub const DEFAULT_LOW_WATER: usize = DEFAULT_HIGH_WATER / 4;
/// An emptied write buffer larger than this gives its memory back.
const KEEP_AT_MOST: usize = 1024 * 1024;

/// The write side of a stream (asyncio's `StreamWriter`), from
/// [`open_connection`](super::open_connection), a server's handler, or
/// [`from_socket`](super::from_socket).
///
/// - [`write`](Self::write) never waits: it sends what the socket takes now and
///   buffers the rest, which goes out in the background whether or not anyone
///   calls [`drain`](Self::drain).
/// - [`drain`](Self::drain) is the flow control: it waits while the buffer is
///   above the high-water mark (default [`DEFAULT_HIGH_WATER`], 64 KiB), until the
///   flusher brings it down to the low-water mark (default [`DEFAULT_LOW_WATER`],
///   16 KiB), and it reports a lost connection. Call it after writes, as in
///   asyncio, or the buffer grows with whatever the peer does not read.
/// - [`close`](Self::close) sends what is buffered, then shuts both directions
///   down (the reader then reads end-of-stream); [`wait_closed`](Self::wait_closed)
///   waits for that. [`write_eof`](Self::write_eof) is the half-close: the peer
///   reads end-of-stream, and the reader still reads.
/// - Dropped without `close`, it sends what is buffered, then half-closes (the
///   socket itself closes once the reader is gone too). asyncio closes both
///   directions there; a half-close leaves a reader that another task holds
///   working.
///
/// Errors are not lost: a write that fails (a reset connection) fails the
/// connection, and the next `drain` and `wait_closed` return the error. Writes
/// after `close` or `write_eof` are refused (asyncio raises there): logged, and
/// `drain` returns a `BrokenPipe` error saying so.
///
/// ```
/// use shardloop::streams;
/// shardloop::run(async {
///     let server = streams::start_server("127.0.0.1:0", |mut r, mut w| async move {
///         let request = r.read_to_eof().await?; // the client's write_eof ends it
///         w.write(&request);
///         w.write(b" back");
///         w.close();
///         w.wait_closed().await
///     })
///     .await?;
///     let (mut r, mut w) = streams::open_connection(server.local_addr()).await?;
///     assert!(w.can_write_eof());
///     w.write(b"hello");
///     w.drain().await?;
///     w.write_eof();
///     assert_eq!(r.read_to_eof().await?, b"hello back");
///     Ok::<_, shardloop::Error>(())
/// })??;
/// # Ok::<(), shardloop::Error>(())
/// ```
pub struct StreamWriter<S: StreamSocket = TcpStream> {
    shared: Rc<Shared<S>>,
}

/// Where the write side is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Open,
    /// `write_eof` (or the writer dropped): the write side is shut down once the
    /// buffer is out.
    ShutWriteWhenFlushed,
    /// The write side is shut down.
    WriteShut,
    /// `close`: both directions are shut down once the buffer is out.
    CloseWhenFlushed,
    /// Both directions are shut down.
    Closed,
}

/// What the writer and its flusher task share.
struct Shared<S> {
    conn: Rc<Connection<S>>,
    buffer: RefCell<WriteBuffer>,
    phase: Cell<Phase>,
    /// A flusher task exists. It does exactly while the buffer is not empty.
    flushing: Cell<bool>,
    high: Cell<usize>,
    low: Cell<usize>,
    /// Above the high-water mark, and not back down to the low one yet.
    paused: Cell<bool>,
    /// Set while not paused: what `drain` waits on.
    resumed: Event,
    /// The error that failed the connection (its buffer is dropped then).
    lost: RefCell<Option<io::Error>>,
    /// Bytes refused since `close` or `write_eof`.
    refused: Cell<usize>,
    /// Set once closed or lost: what `wait_closed` waits on.
    done: Event,
}

impl<S: StreamSocket> StreamWriter<S> {
    pub(super) fn new(conn: Rc<Connection<S>>) -> Self {
        let resumed = Event::new();
        resumed.set();
        StreamWriter {
            shared: Rc::new(Shared {
                conn,
                buffer: RefCell::new(WriteBuffer::default()),
                phase: Cell::new(Phase::Open),
                flushing: Cell::new(false),
                high: Cell::new(DEFAULT_HIGH_WATER),
                low: Cell::new(DEFAULT_LOW_WATER),
                paused: Cell::new(false),
                resumed,
                lost: RefCell::new(None),
                refused: Cell::new(0),
                done: Event::new(),
            }),
        }
    }

    /// Sends `data`: what the socket takes now goes at once (when nothing is
    /// buffered before it), the rest is buffered and sent in the background.
    /// Never waits; [`drain`](Self::drain) is the flow control.
    pub fn write(&mut self, data: &[u8]) {
        self.shared.write(data);
    }

    /// Writes each buffer in turn (asyncio's `writelines`).
    pub fn writelines<'a>(&mut self, data: impl IntoIterator<Item = &'a [u8]>) {
        for chunk in data {
            self.shared.write(chunk);
        }
    }

    /// Waits while the buffer is above the high-water mark, until it is down to
    /// the low-water mark; at once otherwise. Returns the error that failed the
    /// connection, a `ConnectionReset` error ("connection lost") once it is closed,
    /// or a `BrokenPipe` error if writes were refused after `close` or `write_eof`.
    pub async fn drain(&mut self) -> Result<(), Error> {
        let s = &*self.shared;
        if s.phase.get() == Phase::Closed && s.lost.borrow().is_none() {
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "connection lost",
            )));
        }
        s.check()?;
        while s.paused.get() {
            s.resumed.wait().await;
            s.check()?;
        }
        Ok(())
    }

    /// Closes the stream: what is buffered is sent, then both directions are shut
    /// down (the peer and this side's reader read end-of-stream). The socket itself
    /// closes when the reader is dropped too. Idempotent.
    pub fn close(&mut self) {
        self.shared.close();
    }

    /// The server's hold on this writer (for `Server::close_clients`).
    pub(super) fn handle(&self) -> WriterHandle<S> {
        WriterHandle {
            writer: Rc::downgrade(&self.shared),
            conn: Rc::downgrade(&self.shared.conn),
        }
    }

    /// Whether it is closed or closing (or the connection failed).
    pub fn is_closing(&self) -> bool {
        let s = &*self.shared;
        s.lost.borrow().is_some() || matches!(s.phase.get(), Phase::CloseWhenFlushed | Phase::Closed)
    }

    /// Waits until [`close`](Self::close) has sent the buffer and shut the socket
    /// down, or the connection failed (then the error). Without a `close`, it waits
    /// for a failure.
    pub async fn wait_closed(&self) -> Result<(), Error> {
        self.shared.done.wait().await;
        match lost_error(&self.shared.lost) {
            Some(e) => Err(Error::Io(e)),
            None => Ok(()),
        }
    }

    /// Whether [`write_eof`](Self::write_eof) is supported: it is, on TCP and
    /// Unix-domain streams.
    pub fn can_write_eof(&self) -> bool {
        true
    }

    /// The half-close: what is buffered is sent, then the write side is shut down,
    /// so the peer reads end-of-stream; this side can still read. Further writes
    /// are refused.
    pub fn write_eof(&mut self) {
        let s = &*self.shared;
        if s.phase.get() != Phase::Open || s.lost.borrow().is_some() {
            return;
        }
        s.phase.set(Phase::ShutWriteWhenFlushed);
        if !s.flushing.get() {
            s.flushed();
        }
    }

    /// How many bytes are buffered, not sent yet (asyncio's
    /// `transport.get_write_buffer_size()`).
    pub fn get_write_buffer_size(&self) -> usize {
        self.shared.buffer.borrow().len()
    }

    /// Sets the high- and low-water marks that [`drain`](Self::drain) goes by
    /// (asyncio's `transport.set_write_buffer_limits`); `low > high` is refused with
    /// an `InvalidInput` error.
    pub fn set_write_buffer_limits(&mut self, high: usize, low: usize) -> Result<(), Error> {
        if low > high {
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("high ({high}) must be >= low ({low})"),
            )));
        }
        let s = &*self.shared;
        s.high.set(high);
        s.low.set(low);
        s.maybe_pause();
        s.maybe_resume();
        Ok(())
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<S::Addr> {
        self.shared.conn.socket.peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<S::Addr> {
        self.shared.conn.socket.local_addr()
    }

    /// The socket (asyncio's `get_extra_info('socket')`), for its options. Writing
    /// to it directly would overtake the buffer.
    pub fn get_ref(&self) -> &S {
        &self.shared.conn.socket
    }
}

impl<S: StreamSocket> Drop for StreamWriter<S> {
    fn drop(&mut self) {
        self.write_eof();
    }
}

impl<S: StreamSocket> fmt::Debug for StreamWriter<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &*self.shared;
        f.debug_struct("StreamWriter")
            .field("buffered", &s.buffer.borrow().len())
            .field("phase", &s.phase.get())
            .field("paused", &s.paused.get())
            .field("lost", &*s.lost.borrow())
            .finish()
    }
}

/// A server's hold on one of its connections: weak, for `Server::close_clients`
/// and `abort_clients` (nothing if the connection is gone).
pub(super) struct WriterHandle<S> {
    writer: Weak<Shared<S>>,
    /// The socket, which the reader keeps once the handler dropped its writer.
    conn: Weak<Connection<S>>,
}

impl<S> Clone for WriterHandle<S> {
    fn clone(&self) -> Self {
        WriterHandle {
            writer: self.writer.clone(),
            conn: self.conn.clone(),
        }
    }
}

impl<S: StreamSocket> WriterHandle<S> {
    /// As [`StreamWriter::close`].
    pub(super) fn close(&self) {
        match self.writer.upgrade() {
            Some(s) => s.close(),
            None => self.shut_reader(),
        }
    }

    /// Drops what is buffered and shuts both directions down now: the peer and the
    /// handler's reader read end-of-stream, and `drain` and `wait_closed` report
    /// the connection aborted.
    pub(super) fn abort(&self) {
        match self.writer.upgrade() {
            Some(s) => s.abort(),
            None => self.shut_reader(),
        }
    }

    /// The writer is gone, so it sent its buffer and half-closed: what is left of
    /// the connection is the handler's reader, which now reads end-of-stream.
    fn shut_reader(&self) {
        if let Some(conn) = self.conn.upgrade() {
            let _ = conn.socket.shutdown(Shutdown::Both);
            conn.closed.set(true);
        }
    }
}

impl<S: StreamSocket> Shared<S> {
    fn close(&self) {
        if self.lost.borrow().is_some() || matches!(self.phase.get(), Phase::CloseWhenFlushed | Phase::Closed) {
            return;
        }
        self.phase.set(Phase::CloseWhenFlushed);
        if !self.flushing.get() {
            self.flushed();
        }
    }

    fn abort(&self) {
        if self.lost.borrow().is_some() || self.phase.get() == Phase::Closed {
            return;
        }
        // Not through `flushed`: a flusher may be waiting for a peer that never
        // reads. It finds the buffer empty (or the socket shut) when it wakes.
        let _ = self.conn.socket.shutdown(Shutdown::Both);
        self.phase.set(Phase::Closed);
        self.conn.closed.set(true);
        self.lose(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "the connection was aborted (Server::abort_clients)",
        ));
    }

    fn write(self: &Rc<Self>, data: &[u8]) {
        if data.is_empty() || self.lost.borrow().is_some() {
            // After a failure the data has nowhere to go; `drain` reports the failure.
            return;
        }
        if self.phase.get() != Phase::Open {
            self.refused.set(self.refused.get() + data.len());
            log::warn!(
                "stream writer: {} bytes written after close() or write_eof() were dropped",
                data.len()
            );
            return;
        }
        let mut rest = data;
        if !self.flushing.get() {
            // Nothing is buffered: try the socket first, as asyncio's transport does.
            match self.conn.socket.try_write(data) {
                Ok(n) => rest = &data[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return self.lose(e),
            }
            if rest.is_empty() {
                return;
            }
        }
        self.buffer.borrow_mut().extend(rest);
        self.maybe_pause();
        if !self.flushing.get() {
            self.start_flusher();
        }
    }

    fn start_flusher(self: &Rc<Self>) {
        self.flushing.set(true);
        let shared = self.clone();
        let spawned = spawn_on(&self.conn.socket.owner(), async move {
            let sent = poll_fn(|cx| shared.poll_send(cx)).await;
            shared.flushing.set(false);
            match sent {
                Ok(()) => shared.flushed(),
                Err(e) => shared.lose(e),
            }
        });
        if let Err(e) = spawned {
            self.flushing.set(false);
            self.lose(e.into());
        }
    }

    /// Sends the buffer until it is empty.
    fn poll_send(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let sent = {
                let buffer = self.buffer.borrow();
                let pending = buffer.pending();
                if pending.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                match self.conn.socket.poll_write(cx, pending) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            };
            self.buffer.borrow_mut().advance(sent);
            self.maybe_resume();
        }
    }

    /// The buffer is empty: does the shutdown that waited for it.
    fn flushed(&self) {
        let (how, next) = match self.phase.get() {
            Phase::ShutWriteWhenFlushed => (Shutdown::Write, Phase::WriteShut),
            Phase::CloseWhenFlushed => (Shutdown::Both, Phase::Closed),
            _ => return,
        };
        match self.conn.socket.shutdown(how) {
            // Not connected any more: there is nothing left to shut down.
            Err(e) if e.kind() != io::ErrorKind::NotConnected => self.lose(e),
            _ => {
                self.phase.set(next);
                if next == Phase::Closed {
                    self.conn.closed.set(true);
                    self.done.set();
                }
            }
        }
    }

    /// The connection failed: the buffer is dropped, and waiters hear of it.
    fn lose(&self, e: io::Error) {
        log::debug!("stream writer: connection lost: {e}");
        self.lost.borrow_mut().get_or_insert(e);
        self.buffer.borrow_mut().clear();
        self.paused.set(false);
        self.resumed.set();
        self.done.set();
    }

    /// The error `drain` reports now, if any.
    fn check(&self) -> Result<(), Error> {
        if let Some(e) = lost_error(&self.lost) {
            return Err(Error::Io(e));
        }
        match self.refused.get() {
            0 => Ok(()),
            n => Err(Error::Io(io::Error::new(
                io::ErrorKind::BrokenPipe,
                format!("cannot write after close() or write_eof(): {n} bytes were dropped"),
            ))),
        }
    }

    fn maybe_pause(&self) {
        if !self.paused.get() && self.buffer.borrow().len() > self.high.get() {
            self.paused.set(true);
            self.resumed.clear();
        }
    }

    fn maybe_resume(&self) {
        if self.paused.get() && self.buffer.borrow().len() <= self.low.get() {
            self.paused.set(false);
            self.resumed.set();
        }
    }
}

/// A copy of the stored error, for each caller that asks (`io::Error` is not
/// `Clone`): the same OS error code, or the same kind and message.
fn lost_error(lost: &RefCell<Option<io::Error>>) -> Option<io::Error> {
    lost.borrow().as_ref().map(|e| match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    })
}

/// The bytes not sent yet: `data[sent..]`.
#[derive(Default)]
struct WriteBuffer {
    data: Vec<u8>,
    sent: usize,
}

impl WriteBuffer {
    fn len(&self) -> usize {
        self.data.len() - self.sent
    }

    fn pending(&self) -> &[u8] {
        &self.data[self.sent..]
    }

    fn extend(&mut self, more: &[u8]) {
        // Move the unsent bytes to the front once the sent ones are the larger
        // part: each byte is moved at most once on average.
        if self.sent > 0 && self.sent >= self.data.len() / 2 {
            self.data.drain(..self.sent);
            self.sent = 0;
        }
        self.data.extend_from_slice(more);
    }

    fn advance(&mut self, n: usize) {
        self.sent += n;
        if self.sent == self.data.len() {
            self.clear();
        }
    }

    fn clear(&mut self) {
        self.sent = 0;
        if self.data.capacity() > KEEP_AT_MOST {
            self.data = Vec::new();
        } else {
            self.data.clear();
        }
    }
}
