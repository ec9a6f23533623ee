//! [`StreamWriter`]: asyncio's `StreamWriter`, over the write side of a socket.
//!
//! The writer is its own transport: on an epoll loop `write` sends what the socket
//! takes at once and buffers the rest, and a flusher task (spawned when there is a rest, gone
//! once the buffer is empty) sends the buffer in the background, as asyncio's
//! transport does from its writer callback. `drain` only waits for the flusher to
//! bring the buffer down (asyncio's `FlowControlMixin`). Closing and half-closing
//! happen once the buffer is out.
//!
//! On a proactor whose ring receives the stream's bytes, a write from the running
//! loop is not sent at once: it starts a ring send of the buffer, which the loop
//! submits with its next batch (one `io_uring_enter` for every connection, where
//! epoll makes a `send(2)` each). The bytes in the kernel count as buffered, as in
//! asyncio's proactor transports. A lone send needs no task: the next write (or
//! `drain`, or a look at the buffer's size) collects its completion. A flusher is
//! spawned only for what must wait for one: writes that gather behind a send still
//! in the kernel, a paused writer, a close. Outside its running loop a write is a
//! `send(2)` as on epoll, or, behind a ring send, gathers behind it (a send
//! started then is submitted at once).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::Shutdown;
use std::rc::{Rc, Weak};
use std::task::{ready, Context, Poll};

use super::socket::StreamSocket;
use super::{spawn_on, Connection};
use crate::io::OpKey;
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
///   calls [`drain`](Self::drain). (On a proactor it hands the bytes to a ring
///   send instead, which the loop submits with its next batch; they count as
///   buffered until it completes.)
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
struct Shared<S: StreamSocket> {
    conn: Rc<Connection<S>>,
    buffer: RefCell<WriteBuffer>,
    phase: Cell<Phase>,
    /// A flusher task exists. It does while the buffer is not empty, and on a
    /// proactor while the writer is paused, a close waits for its ring send, or
    /// `wait_closed` waits for one.
    flushing: Cell<bool>,
    /// The ring send in the kernel, on a proactor.
    sending: Cell<Option<RingSend>>,
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
                sending: Cell::new(None),
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
    /// buffered before it), the rest is buffered and sent in the background; on a
    /// proactor, from its running loop, a ring send takes it (see the type's
    /// docs). Never waits; [`drain`](Self::drain) is the flow control.
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
        s.collect_send();
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
        let s = &self.shared;
        if !s.flushing.get() && s.sending.get().is_some() {
            // A failed send must wake this: a flusher waits for its completion.
            s.start_flusher();
        }
        s.done.wait().await;
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
        let s = &self.shared;
        if s.phase.get() != Phase::Open || s.lost.borrow().is_some() {
            return;
        }
        s.phase.set(Phase::ShutWriteWhenFlushed);
        self.shared.shut_when_flushed();
    }

    /// How many bytes are buffered, not sent yet (asyncio's
    /// `transport.get_write_buffer_size()`); on a proactor, those in the kernel's
    /// ring send too.
    pub fn get_write_buffer_size(&self) -> usize {
        self.shared.collect_send();
        self.shared.buffered()
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
        if s.paused.get() && !s.flushing.get() {
            // A lone ring send is above the new mark: a flusher must collect it
            // for `drain` to wake.
            self.shared.start_flusher();
        }
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
            .field("buffered", &s.buffered())
            .field("phase", &s.phase.get())
            .field("paused", &s.paused.get())
            .field("lost", &*s.lost.borrow())
            .finish()
    }
}

/// A server's hold on one of its connections: weak, for `Server::close_clients`
/// and `abort_clients` (nothing if the connection is gone).
pub(super) struct WriterHandle<S: StreamSocket> {
    writer: Weak<Shared<S>>,
    /// The socket, which the reader keeps once the handler dropped its writer.
    conn: Weak<Connection<S>>,
}

impl<S: StreamSocket> Clone for WriterHandle<S> {
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
    fn close(self: &Rc<Self>) {
        if self.lost.borrow().is_some() || matches!(self.phase.get(), Phase::CloseWhenFlushed | Phase::Closed) {
            return;
        }
        self.phase.set(Phase::CloseWhenFlushed);
        self.shut_when_flushed();
    }

    /// A close or a half-close waits for the bytes not sent yet: the flusher's,
    /// a ring send's (a flusher then waits for it), or none (it happens now).
    fn shut_when_flushed(self: &Rc<Self>) {
        if self.flushing.get() {
            return;
        }
        if self.collect_send() {
            self.flushed();
        } else {
            self.start_flusher();
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
        if self.sending.get().is_some() || (!self.flushing.get() && self.conn.socket.sends_by_ring_now()) {
            return self.write_by_ring(data);
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

    /// A write on a proactor: a ring send of the buffer starts now, unless one is
    /// in the kernel still (then the bytes gather behind it, and a flusher sends
    /// them once it completes). Started here, not in a task: a loop that stops at
    /// the end of this turn still submits it.
    fn write_by_ring(self: &Rc<Self>, data: &[u8]) {
        self.buffer.borrow_mut().extend(data);
        if self.collect_send() && !self.flushing.get() {
            if let Err(e) = self.send_buffer() {
                return self.lose(e);
            }
        }
        if self.lost.borrow().is_some() {
            return;
        }
        self.maybe_pause();
        if !self.flushing.get() && (self.paused.get() || self.buffer.borrow().len() > 0) {
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
        if self.sending.get().is_some() || self.conn.socket.sends_by_ring_now() {
            return self.poll_send_by_ring(cx);
        }
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

    /// Sends the buffer through the ring until it is empty: one send at a time,
    /// each of all that gathered while the one before it was in the kernel.
    fn poll_send_by_ring(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let Some(send) = self.sending.get() else {
                // A send the socket's own `AsyncWrite` made before the writer took
                // it goes first.
                ready!(self.conn.socket.poll_own_send(cx))?;
                if self.buffer.borrow().len() == 0 {
                    return Poll::Ready(Ok(()));
                }
                if let Err(e) = self.send_buffer() {
                    return Poll::Ready(Err(e));
                }
                continue;
            };
            let Poll::Ready((sent, buf)) = self.conn.socket.poll_ring_send(send.key, cx) else {
                return Poll::Pending;
            };
            if let Err(e) = self.sent(send, sent, buf) {
                return Poll::Ready(Err(e));
            }
        }
    }

    /// Collects the ring send if it completed, with nobody waiting for it (a
    /// failure loses the connection); whether no send is in the kernel now: the
    /// writer's, or one the socket's own `AsyncWrite` made before the writer took it.
    fn collect_send(&self) -> bool {
        let Some(send) = self.sending.get() else {
            return self.conn.socket.own_send_done();
        };
        let Some((sent, buf)) = self.conn.socket.take_ring_send(send.key) else {
            return false;
        };
        if let Err(e) = self.sent(send, sent, buf) {
            self.lose(e);
        }
        self.sending.get().is_none()
    }

    /// Ring send `send` completed, having sent `sent` of `buf`: the rest of a
    /// short send (a signal, or more than a send's `u32` of bytes) goes again,
    /// first; a whole one gives its buffer back for the next writes.
    fn sent(&self, send: RingSend, sent: io::Result<usize>, buf: Vec<u8>) -> io::Result<()> {
        self.sending.set(None);
        let done = match sent? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => send.from + n,
        };
        if done < buf.len() {
            return self.start_send(buf, done);
        }
        self.buffer.borrow_mut().recycle(buf);
        self.maybe_resume();
        Ok(())
    }

    /// Hands all that is buffered to one ring send (none is in the kernel).
    fn send_buffer(&self) -> io::Result<()> {
        let buf = self.buffer.borrow_mut().take_all();
        if buf.is_empty() {
            return Ok(());
        }
        self.start_send(buf, 0)
    }

    /// Starts the ring send of `buf[from..]`.
    fn start_send(&self, buf: Vec<u8>, from: usize) -> io::Result<()> {
        let bytes = buf.len() - from;
        let key = self.conn.socket.start_ring_send(buf, from).map_err(|(e, _)| e)?;
        self.sending.set(Some(RingSend { key, from, bytes }));
        Ok(())
    }

    /// Cancels the ring send in the kernel, if there is one; the flusher waiting
    /// for it wakes and finds it gone.
    fn cancel_send(&self) {
        if let Some(send) = self.sending.take() {
            self.conn.socket.cancel_ring_send(send.key);
        }
    }

    /// The bytes not sent yet: those buffered, and those of the ring send.
    fn buffered(&self) -> usize {
        self.buffer.borrow().len() + self.sending.get().map_or(0, |send| send.bytes)
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
        self.cancel_send();
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
        if !self.paused.get() && self.buffered() > self.high.get() {
            self.paused.set(true);
            self.resumed.clear();
        }
    }

    fn maybe_resume(&self) {
        if self.paused.get() && self.buffered() <= self.low.get() {
            self.paused.set(false);
            self.resumed.set();
        }
    }
}

impl<S: StreamSocket> Drop for Shared<S> {
    /// Writer and flusher are gone with a send in the kernel (its loop closed, which
    /// dropped the flusher): it is cancelled, and its buffer freed once the kernel
    /// answers.
    fn drop(&mut self) {
        self.cancel_send();
    }
}

/// A ring send in the kernel: of its buffer's bytes from `from`, `bytes` of them.
#[derive(Clone, Copy)]
struct RingSend {
    key: OpKey,
    from: usize,
    bytes: usize,
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
    /// A ring send's buffer, given back, for the writes after the next send.
    spare: Vec<u8>,
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

    /// All the unsent bytes, for one ring send; the spare buffer takes the next
    /// writes.
    fn take_all(&mut self) -> Vec<u8> {
        let mut all = std::mem::replace(&mut self.data, std::mem::take(&mut self.spare));
        all.drain(..self.sent);
        self.sent = 0;
        all
    }

    /// A sent buffer back, kept for [`take_all`](Self::take_all) unless it is large.
    fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.spare.capacity() == 0 && buf.capacity() <= KEEP_AT_MOST {
            buf.clear();
            self.spare = buf;
        }
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

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::rc::Rc;
    use std::time::Duration;

    use super::StreamWriter;
    use crate::io::{lent, on_test_proactor, pattern, rounds, slow_peer, until, SlowPeer};
    use crate::streams::{open_connection, StreamReader};
    use crate::EventLoop;

    /// A connection to a [`SlowPeer`].
    async fn stream_to_slow_peer() -> (StreamReader, StreamWriter, SlowPeer) {
        let (addr, peer) = slow_peer();
        let (r, w) = open_connection(addr).await.unwrap();
        (r, w, peer)
    }

    /// On a proactor, a writer's writes from its running loop go to the kernel as
    /// ring sends: none is written at once, so all of it counts as buffered; while
    /// a send is in the kernel the writes gather behind it; `drain` waits for the
    /// sends, the peer gets every byte in order, and the buffers come back.
    #[test]
    fn a_proactor_stream_writer_sends_through_the_ring_in_order() {
        on_test_proactor(|lp| async move {
            let (_r, mut w, (go, peer)) = stream_to_slow_peer().await;
            let sent = pattern(4 << 20);
            for chunk in sent.chunks(64 << 10) {
                w.write(chunk);
            }
            assert_eq!(w.get_write_buffer_size(), sent.len(), "a ring writer wrote at once");
            let first = lent(&lp);
            assert!(first > 0, "no send is in the kernel");
            assert!(first <= 64 << 10, "more than the first write went to the kernel at once");
            go.send(()).unwrap();
            w.drain().await.unwrap();
            until(|| w.get_write_buffer_size() == 0).await;
            assert_eq!(lent(&lp), 0, "a completed send still holds its buffer");
            w.close();
            w.wait_closed().await.unwrap();
            until(|| peer.is_finished()).await;
            assert!(peer.join().unwrap() == sent, "the peer got the bytes out of order or changed");
        });
    }

    /// A lone ring send needs no task: after a small write nothing but the writer
    /// holds its state (no flusher was spawned), the next write collects the
    /// completed send and reuses its buffer, and a look at the buffer's size
    /// collects the last one.
    #[test]
    fn a_lone_proactor_ring_send_is_collected_without_a_task() {
        on_test_proactor(|lp| async move {
            let (_r, mut w, (go, peer)) = stream_to_slow_peer().await;
            go.send(()).unwrap();
            let mut sent = Vec::new();
            for i in 0..100u8 {
                let message = [i; 100];
                w.write(&message);
                sent.extend_from_slice(&message);
                assert!(lent(&lp) > 0, "the write was not a ring send");
                assert_eq!(Rc::strong_count(&w.shared), 1, "a flusher was spawned for a lone send");
                w.drain().await.unwrap();
                crate::time::sleep(Duration::from_millis(1)).await;
            }
            until(|| w.get_write_buffer_size() == 0).await;
            assert_eq!(lent(&lp), 0, "the last send was not collected");
            let kept = w.shared.buffer.borrow().data.capacity() + w.shared.buffer.borrow().spare.capacity();
            assert!(kept >= 100, "the sends' buffers were not kept for the next writes");
            drop(w);
            until(|| peer.is_finished()).await;
            assert!(peer.join().unwrap() == sent, "the peer got the bytes out of order or changed");
        });
    }

    /// A ring send that fails (the peer reset the connection), collected with
    /// nobody waiting for it, fails the connection: `drain` reports it.
    #[test]
    fn a_failed_proactor_ring_send_is_reported_by_drain() {
        on_test_proactor(|lp| async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let (_r, mut w) = open_connection(listener.local_addr().unwrap()).await.unwrap();
            let (peer, _) = listener.accept().unwrap();
            // SO_LINGER 0: the close resets the connection.
            socket2::SockRef::from(&peer).set_linger(Some(Duration::ZERO)).unwrap();
            drop(peer);
            w.write(b"after the reset");
            assert!(lent(&lp) > 0, "the write was not a ring send");
            for _ in 0..5_000 {
                w.write(b"after the reset");
                if let Err(e) = w.drain().await {
                    let e = e.to_string();
                    assert!(e.contains("reset") || e.contains("pipe"), "{e}");
                    assert!(w.wait_closed().await.is_err());
                    return;
                }
                crate::time::sleep(Duration::from_millis(1)).await;
            }
            panic!("writes to a reset connection never failed");
        });
    }

    /// Aborting a writer whose send waits in the kernel (the peer reads nothing)
    /// cancels it: the ring frees its buffer, nothing counts as buffered, the
    /// flusher that waited for it ends (it held the writer's state), and
    /// `wait_closed` reports the abort.
    #[test]
    fn aborting_a_proactor_stream_writer_cancels_its_send_and_ends_its_flusher() {
        on_test_proactor(|lp| async move {
            let (_r, mut w, (go, peer)) = stream_to_slow_peer().await;
            w.write(&[1; 100]);
            crate::task::yield_now().await;
            w.write(&pattern(16 << 20));
            // The second send, which the socket's buffer cannot take, is in the kernel.
            until(|| lent(&lp) >= 1 << 20).await;
            w.shared.abort();
            assert!(w.is_closing());
            assert_eq!(w.get_write_buffer_size(), 0, "an abort keeps what was not sent");
            until(|| lent(&lp) == 0).await;
            until(|| Rc::strong_count(&w.shared) == 1).await;
            let e = w.wait_closed().await.unwrap_err();
            assert!(e.to_string().contains("aborted"), "{e}");
            drop(go);
            until(|| peer.is_finished()).await;
            assert!(peer.join().unwrap().is_empty());
        });
    }

    /// A proactor loop set as this thread's, not running, with a stream connected
    /// to a blocking peer on this thread (reads time out after 20 s).
    fn connected_on_a_stopped_proactor() -> Option<(EventLoop, StreamReader, StreamWriter, TcpStream)> {
        let lp = crate::io::test_proactor()?;
        crate::set_event_loop(Some(lp.clone()));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (r, w) = lp.run_until_complete(open_connection(listener.local_addr().unwrap())).unwrap().unwrap();
        let (peer, _) = listener.accept().unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Some((lp, r, w, peer))
    }

    /// A proactor writer written to while its loop does not run sends at once (the
    /// peer, a blocking socket on this thread, reads it with the loop stopped). The
    /// send of a write in the loop's last turn is submitted as the loop stops; a
    /// write behind it waits for the loop's next run, which collects the send, as
    /// in asyncio's proactor. Closed then, the peer reads the rest and EOF.
    #[test]
    fn a_proactor_stream_writer_sends_outside_its_loop_and_as_it_stops() {
        let Some((lp, r, mut w, mut peer)) = connected_on_a_stopped_proactor() else {
            return;
        };
        w.write(b"outside");
        let mut got = [0; 7];
        peer.read_exact(&mut got).expect("the write outside the loop did not go out");
        assert_eq!(&got, b"outside");
        let w = lp
            .run_until_complete(async move {
                w.write(b"last ");
                w.write(b"turn");
                assert_eq!(w.get_write_buffer_size(), 9, "the writes were not ring sends");
                w
            })
            .unwrap();
        // The second write gathered behind the first's send, for the next turn.
        let mut got = [0; 5];
        peer.read_exact(&mut got).expect("the last turn's send was not submitted");
        assert_eq!(&got, b"last ");
        let mut w = w;
        w.close();
        lp.run_until_complete(w.wait_closed()).unwrap().unwrap();
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"turn");
        drop((r, w));
        lp.close().unwrap();
        crate::set_event_loop(None);
    }

    /// A write made outside the loop, after the loop read (but nobody collected)
    /// the completion of the writer's last ring send, goes out at once: its send is
    /// submitted then, with no turn of the loop's to wait for.
    #[test]
    fn a_proactor_stream_writer_sends_outside_its_loop_after_a_completed_ring_send() {
        let Some((lp, r, w, mut peer)) = connected_on_a_stopped_proactor() else {
            return;
        };
        let mut w = lp
            .run_until_complete(async move {
                let mut w = w;
                w.write(b"first");
                crate::time::sleep(Duration::from_millis(20)).await;
                w
            })
            .unwrap();
        let mut got = [0; 5];
        peer.read_exact(&mut got).unwrap();
        assert!(w.shared.sending.get().is_some(), "the first send was collected already");
        w.write(b"second");
        let mut got = [0; 6];
        peer.read_exact(&mut got).expect("the write made outside the loop was not sent");
        assert_eq!(&got, b"second");
        drop((r, w));
        lp.close().unwrap();
        crate::set_event_loop(None);
    }

    /// Lowering the high-water mark below a lone ring send's bytes pauses the
    /// writer, and a flusher then sees to it: `drain` returns once the peer reads.
    #[test]
    fn lowering_the_limits_under_a_lone_proactor_ring_send_leaves_drain_working() {
        on_test_proactor(|lp| async move {
            let (_r, mut w, (go, peer)) = stream_to_slow_peer().await;
            w.set_write_buffer_limits(64 << 20, 16 << 20).unwrap();
            let sent = pattern(16 << 20);
            w.write(&sent);
            until(|| lent(&lp) > 0).await;
            assert_eq!(Rc::strong_count(&w.shared), 1, "a flusher was spawned for a lone send");
            w.set_write_buffer_limits(1024, 0).unwrap();
            go.send(()).unwrap();
            let drained = crate::time::timeout(Duration::from_secs(20), w.drain()).await;
            assert!(drained.is_ok(), "drain hung with no flusher alive");
            w.close();
            w.wait_closed().await.unwrap();
            drop(w);
            until(|| peer.is_finished()).await;
            assert!(peer.join().unwrap() == sent);
        });
    }

    /// Writers ended at every point of their ring sends (before the first is
    /// submitted, while one is in the kernel, between two), 200 rounds of sizes
    /// from a byte to a megabyte, each aborted, closed or dropped: every send's
    /// buffer comes back to the ring, every flusher ends, a closed writer's peer
    /// reads all it was sent, and an aborted one reports the abort.
    #[test]
    fn proactor_writers_ended_at_any_point_of_a_send_give_their_buffers_back() {
        on_test_proactor(|lp| async move {
            let received = Rc::new(std::cell::RefCell::new(Vec::new()));
            let got = received.clone();
            let server = crate::streams::start_server("127.0.0.1:0", move |mut r, _w| {
                let got = got.clone();
                async move {
                    let mut n = 0;
                    while let Ok(chunk) = r.read(64 << 10).await {
                        if chunk.is_empty() {
                            break;
                        }
                        n += chunk.len();
                    }
                    got.borrow_mut().push(n);
                }
            })
            .await
            .unwrap();
            let addr = server.local_addr();
            let (mut closed, mut aborted, mut dropped, mut readers) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let mut closed_bytes = Vec::new();
            for seed in rounds(0x2545_f491, 200) {
                let (r, mut w) = open_connection(addr).await.unwrap();
                let len = 1 + seed as usize % (1 << 20);
                w.write(&pattern(len));
                for _ in 0..seed % 4 {
                    crate::task::yield_now().await;
                }
                w.write(&[7; 100]);
                for _ in 0..(seed >> 8) % 3 {
                    crate::time::sleep(Duration::from_micros(200)).await;
                }
                readers.push(r);
                match (seed >> 16) % 3 {
                    0 => {
                        w.shared.abort();
                        aborted.push(w);
                    }
                    1 => {
                        w.close();
                        closed_bytes.push(len + 100);
                        closed.push(w);
                    }
                    _ => dropped.push(Rc::downgrade(&w.shared)),
                }
            }
            for w in &closed {
                w.wait_closed().await.unwrap();
            }
            for w in &aborted {
                let e = w.wait_closed().await.unwrap_err();
                assert!(e.to_string().contains("aborted"), "{e}");
            }
            let writers = || closed.iter().chain(&aborted).map(|w| &w.shared);
            until(|| writers().all(|s| Rc::strong_count(s) == 1)).await;
            until(|| dropped.iter().all(|d| d.strong_count() == 0)).await;
            drop(readers);
            until(|| lent(&lp) == 0).await;
            until(|| received.borrow().len() == 200).await;
            for n in closed_bytes {
                assert!(received.borrow().contains(&n), "a closed writer's peer did not get its {n} bytes");
            }
            server.close();
        });
    }

    /// A loop closed while a writer's send waits in the kernel drops the flusher;
    /// the writer dropped after that cancels the send, and the ring gets its
    /// buffer back.
    #[test]
    fn a_proactor_stream_writer_dropped_after_its_loop_closed_gives_its_send_back() {
        let Some(lp) = crate::io::test_proactor() else {
            return;
        };
        crate::set_event_loop(Some(lp.clone()));
        let (r, w, (go, peer)) = lp
            .run_until_complete(async {
                let (r, mut w, peer) = stream_to_slow_peer().await;
                w.write(&pattern(16 << 20));
                until(|| lent(&crate::get_running_loop().unwrap()) > 0).await;
                (r, w, peer)
            })
            .unwrap();
        lp.close().unwrap();
        assert!(lent(&lp) > 0, "the send left the kernel with no one reading");
        drop((r, w));
        assert_eq!(lent(&lp), 0, "the dropped writer's send kept its buffer");
        drop(go);
        peer.join().unwrap();
        crate::set_event_loop(None);
    }
}
