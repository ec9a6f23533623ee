//! A mio source registered with a loop: readiness-driven operations on it, and its
//! registration released when it is dropped.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};
use std::task::{Context, Poll};

use mio::event::Source;
use mio::{Interest, Token};

use super::accepts::RingAccept;
use super::completion::{submit_send, RingReads};
use super::datagrams::RingDatagrams;
use super::ops::OpKey;
use super::reactor::{Direction, IoState};
use super::uring::UringPoller;
use super::write_behind::WriteBehind;
use crate::current;
use crate::event_loop::LoopInner;
use crate::{Error, EventLoop};

/// `source`, registered with the reactor of the loop that was current when it was
/// made. It holds the loop weakly: a socket kept alive does not keep its loop alive.
pub(crate) struct Registered<S: Source> {
    /// Always `Some` but in [`into_inner`](Self::into_inner).
    source: Option<S>,
    /// The source's fd, for the reactor (kept: `Drop` cannot ask `S` for it).
    fd: RawFd,
    token: Token,
    state: Rc<IoState>,
    lp: Weak<LoopInner>,
    /// What the ring does for this source on a proactor loop.
    ring: RingWork,
}

/// The work a proactor's ring does for a source, instead of readiness and a system
/// call of ours.
enum RingWork {
    /// None: readiness only (an epoll loop, or a source that is neither a stream
    /// nor a listener).
    Nothing,
    /// A stream's reads (see [`super::completion`]) and writes (see
    /// [`super::write_behind`]).
    Stream(Box<RingStream>),
    /// A listener's accepts (see [`super::accepts`]).
    Accepts(RingAccept),
    /// A UDP socket's receives and sends (see [`super::datagrams`]).
    Datagrams(Box<RingDatagrams>),
}

impl<S: Source + AsRawFd> Registered<S> {
    /// Registers `source` with `lp`, for readiness only. (The constructors below
    /// register with this thread's loop, [`crate::get_event_loop`]; their `what`
    /// names the object for the error when there is no usable loop.)
    pub(crate) fn with_loop(lp: &EventLoop, source: S) -> io::Result<Self> {
        Self::register(lp, source, Kind::Other)
    }

    /// Registers the stream `source` with this thread's loop; on a proactor loop the
    /// ring does its reads (no readiness poll for them).
    pub(crate) fn stream(source: S, what: &str) -> io::Result<Self> {
        Self::register(&current_loop(what)?, source, Kind::Stream)
    }

    /// Registers the listener `source` with this thread's loop; on a proactor loop
    /// whose kernel takes multishot accepts, the ring accepts its connections (no
    /// readiness poll for them).
    pub(crate) fn listener(source: S, what: &str) -> io::Result<Self> {
        Self::listener_on(&current_loop(what)?, source)
    }

    /// [`listener`](Self::listener), with `lp`.
    pub(crate) fn listener_on(lp: &EventLoop, source: S) -> io::Result<Self> {
        Self::register(lp, source, Kind::Listener)
    }

    /// Registers the UDP socket `source` with this thread's loop; on a proactor loop
    /// the ring receives and sends its datagrams (no readiness poll at all).
    pub(crate) fn datagram(source: S, what: &str) -> io::Result<Self> {
        Self::register(&current_loop(what)?, source, Kind::Datagram)
    }

    fn register(lp: &EventLoop, source: S, kind: Kind) -> io::Result<Self> {
        let fd = source.as_raw_fd();
        let ring = match (kind, lp.inner.reactor.ring()) {
            (Kind::Stream, Some(_)) => RingWork::Stream(Box::default()),
            (Kind::Listener, Some(ring)) if ring.accepts_by_ring() => RingWork::Accepts(RingAccept::default()),
            (Kind::Datagram, Some(_)) => RingWork::Datagrams(Box::default()),
            _ => RingWork::Nothing,
        };
        // Only writes still wait for readiness when the ring reads or accepts (a
        // listening socket is never writable: its poll stays quiet); nothing does
        // for a UDP socket whose sends the ring does too.
        let interest = match ring {
            RingWork::Nothing => Some(Interest::READABLE | Interest::WRITABLE),
            RingWork::Datagrams(_) => None,
            _ => Some(Interest::WRITABLE),
        };
        let (token, state) = lp.inner.reactor.register(fd, interest)?;
        Ok(Registered {
            source: Some(source),
            fd,
            token,
            state,
            lp: Rc::downgrade(&lp.inner),
            ring,
        })
    }

}

/// A stream's two ring sides.
#[derive(Default)]
struct RingStream {
    reads: RingReads,
    writes: WriteBehind,
}

/// What a source is, for what the ring may do for it.
#[derive(Clone, Copy)]
enum Kind {
    Other,
    Stream,
    Listener,
    Datagram,
}

impl<S: Source> Registered<S> {
    /// The loop it is registered with, unless that loop is gone.
    pub(crate) fn event_loop(&self) -> Option<EventLoop> {
        self.lp.upgrade().map(|inner| EventLoop { inner })
    }

    pub(crate) fn get_ref(&self) -> &S {
        self.source.as_ref().expect("registered source")
    }

    /// The loop it is registered with.
    pub(crate) fn owner(&self) -> &Weak<LoopInner> {
        &self.lp
    }

    /// Deregisters the source and gives it back (to move it to another loop).
    pub(crate) fn into_inner(mut self) -> S {
        self.settle_writes();
        let unread = match (self.ring_reads(), self.lp.upgrade()) {
            (Some(reads), Some(lp)) => lp.reactor.ring().map_or(0, |ring| reads.detach(ring)),
            _ => 0,
        };
        if unread > 0 {
            log::error!(
                "a stream leaves its proactor loop with {unread} bytes that the ring \
                 received and no reader took: the socket's new owner will not see them \
                 (move a stream before reading from it, or read what its peer sent first)"
            );
        }
        self.release();
        self.source.take().expect("registered source")
    }

    fn release(&mut self) {
        if let (Some(lp), Some(_)) = (self.lp.upgrade(), self.source.as_ref()) {
            if let Some(ring) = lp.reactor.ring() {
                match &self.ring {
                    RingWork::Stream(stream) => {
                        stream.writes.release(&lp);
                        stream.reads.cancel(ring);
                    }
                    RingWork::Accepts(accepts) => accepts.cancel(ring),
                    RingWork::Datagrams(datagrams) => datagrams.cancel(ring),
                    RingWork::Nothing => {}
                }
            }
            lp.reactor.deregister(self.fd, self.token);
        }
    }

    /// Whether the ring accepts this listener's connections.
    pub(crate) fn accepts_by_ring(&self) -> bool {
        matches!(self.ring, RingWork::Accepts(_))
    }

    /// On a proactor loop, a UDP socket's ring side; `None` elsewhere (the caller
    /// uses [`poll_io`](Self::poll_io)).
    pub(crate) fn ring_datagrams(&self) -> Option<&RingDatagrams> {
        match &self.ring {
            RingWork::Datagrams(datagrams) => Some(datagrams),
            _ => None,
        }
    }

    /// Whether the ring does this stream's reads.
    pub(crate) fn reads_by_ring(&self) -> bool {
        self.ring_reads().is_some()
    }

    /// On a proactor loop that accepts through the ring, a listener's next connection
    /// (see [`RingAccept::poll`]). `None` elsewhere: the caller accepts with
    /// [`poll_io`](Self::poll_io).
    pub(crate) fn poll_accept_ring(&self, cx: &mut Context<'_>) -> Option<Poll<io::Result<OwnedFd>>> {
        let RingWork::Accepts(accepts) = &self.ring else {
            return None;
        };
        Some(self.with_ring(cx, |ring, cx| accepts.poll(ring, self.fd, cx)))
    }

    /// On a proactor loop, a stream's read: the bytes the ring received go to `take`
    /// (see [`RingReads::poll_ahead`]). `None` on an epoll loop, whose caller reads with
    /// [`poll_io`](Self::poll_io).
    pub(crate) fn poll_read_ring(
        &self,
        cx: &mut Context<'_>,
        want: usize,
        take: impl FnOnce(&[u8]) -> usize,
    ) -> Option<Poll<io::Result<usize>>> {
        let reads = self.ring_reads()?;
        Some(self.with_ring(cx, |ring, cx| {
            crate::task::coop::poll_budgeted(cx, |cx| {
                reads
                    .poll_ahead(ring, self.fd, cx, want, take, true)
                    .map(|r| r.expect("submits when nothing is ahead"))
            })
        }))
    }

    /// Runs `f` with this source's ring, once the loop is known to be the right one
    /// and open.
    pub(crate) fn with_ring<R>(
        &self,
        cx: &mut Context<'_>,
        f: impl FnOnce(&UringPoller, &mut Context<'_>) -> Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if self.state.is_closed() {
            return Poll::Ready(Err(Error::Closed.into()));
        }
        if let Some(e) = self.misplaced() {
            return Poll::Ready(Err(e));
        }
        let Some(lp) = self.lp.upgrade() else {
            return Poll::Ready(Err(Error::Closed.into()));
        };
        f(Self::ring_of(&lp), cx)
    }

    /// The stream's ring reads, if the ring does them.
    pub(crate) fn ring_reads(&self) -> Option<&RingReads> {
        match &self.ring {
            RingWork::Stream(stream) => Some(&stream.reads),
            _ => None,
        }
    }

    /// The stream's write-behind, on a proactor loop.
    pub(crate) fn write_behind(&self) -> Option<&WriteBehind> {
        match &self.ring {
            RingWork::Stream(stream) => Some(&stream.writes),
            _ => None,
        }
    }

    /// On a proactor loop, a stream's write: from its running loop, through the ring
    /// (see [`super::write_behind`]). `None` where the caller writes with `send(2)`:
    /// an epoll loop, or outside the running loop once no ring send is left in the
    /// kernel (one that is goes first: the bytes keep their order).
    pub(crate) fn poll_write_ring(&self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Option<Poll<io::Result<usize>>> {
        let writes = self.write_behind()?;
        // Refused here, not by the socket: a shutdown's task may not have shut it
        // down yet.
        if let Err(e) = writes.check_open() {
            return Some(Poll::Ready(Err(e)));
        }
        if self.sends_by_ring_now() {
            return Some(self.with_ring(cx, |ring, cx| writes.poll_write(ring, self.fd, cx, bufs)));
        }
        if !writes.busy() {
            return None;
        }
        match self.poll_flush_ring(cx) {
            Poll::Ready(Ok(())) => None,
            Poll::Ready(Err(e)) => Some(Poll::Ready(Err(e))),
            Poll::Pending => Some(Poll::Pending),
        }
    }

    /// Waits for the stream's ring send, if one is in the kernel (`poll_flush`); the
    /// error of one that failed. Outside the running loop it first collects the
    /// completions there are, since no turn of the loop's does.
    pub(crate) fn poll_flush_ring(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(writes) = self.write_behind().filter(|w| w.busy()) else {
            return Poll::Ready(Ok(()));
        };
        self.with_ring(cx, |ring, cx| {
            self.collecting_off_loop(ring, || writes.poll_idle(ring, Some(self.fd), cx))
        })
    }

    /// Runs `collect` (which looks at the stream's ring send), with the ring's
    /// completions reaped before and the rest of a short send, restarted by it,
    /// submitted after, when called outside the running loop: no turn of the loop's
    /// does either then.
    fn collecting_off_loop<T>(&self, ring: &UringPoller, collect: impl FnOnce() -> T) -> T {
        let off_loop = current::running_loop_ptr() != self.lp.as_ptr();
        if off_loop {
            ring.reap_completions();
        }
        let collected = collect();
        if off_loop {
            ring.submit_queued();
        }
        collected
    }

    /// Before a shutdown of the write side: whether the stream's ring send is still
    /// in the kernel, and a task (given `dup`, a duplicate of the stream's fd) now
    /// shuts the write side down once it is done, so that the peer's end-of-stream
    /// comes after the bytes; or whether the write side was shut down already
    /// (again would cut such a task's send short). `false` when neither: the caller
    /// shuts down now.
    pub(crate) fn shut_down_after_send(&self, dup: impl FnOnce() -> io::Result<OwnedFd>) -> io::Result<bool> {
        if self.write_shut() {
            return Ok(true);
        }
        let (Some(writes), Some(lp)) = (self.write_behind().filter(|w| w.busy()), self.lp.upgrade()) else {
            return Ok(false);
        };
        let ring = Self::ring_of(&lp);
        // Most sends are done by now, or finish as they are submitted.
        ring.reap_completions();
        if writes.collect(ring, Some(self.fd)) {
            return Ok(false);
        }
        let fd = dup()?;
        let send = writes.hand_over(self.lp.clone());
        let task = EventLoop { inner: lp }.create_task(send.shut_down_when_sent(fd))?;
        task.detach();
        writes.shut_down();
        Ok(true)
    }

    /// The stream's write side was shut down: later writes are refused at once.
    pub(crate) fn note_write_shut(&self) {
        if let Some(writes) = self.write_behind() {
            writes.shut_down();
        }
    }

    /// Whether the write side was shut down here (on a proactor loop; `false`
    /// elsewhere, where nothing needs to know).
    pub(crate) fn write_shut(&self) -> bool {
        self.write_behind().is_some_and(|w| w.check_open().is_err())
    }

    /// The error for a write after the write side was shut down here, if it was.
    pub(crate) fn check_write_open(&self) -> io::Result<()> {
        self.write_behind().map_or(Ok(()), WriteBehind::check_open)
    }

    /// Whether the stream has no ring send in the kernel, collecting one that
    /// completed, without waiting (a failed one's error is dropped: the caller's
    /// own write to the broken connection reports it).
    pub(crate) fn ring_writes_done(&self) -> bool {
        let (Some(writes), Some(lp)) = (self.write_behind().filter(|w| w.busy()), self.lp.upgrade()) else {
            return true;
        };
        let ring = Self::ring_of(&lp);
        self.collecting_off_loop(ring, || writes.collect(ring, Some(self.fd)))
    }

    /// Before a move to another loop, which cannot wait: the stream's
    /// ring send, if one is in the kernel, is waited for, a bounded while (see
    /// [`WriteBehind::settle`]). One that does not finish in time is left to the
    /// kernel, and said so.
    fn settle_writes(&self) {
        let (Some(writes), Some(lp)) = (self.write_behind().filter(|w| w.busy()), self.lp.upgrade()) else {
            return;
        };
        let ring = Self::ring_of(&lp);
        if let Err(unsent) = writes.settle(ring, self.fd) {
            // Left to the kernel, not waited for again by the next caller.
            writes.release(&lp);
            log::warn!(
                "a stream moves to another loop while the kernel still sends {unsent} \
                 bytes it was given (its peer does not read): they may go after the new \
                 owner's, or not at all (flush a stream with AsyncWriteExt::flush before \
                 moving it: that waits for them)"
            );
        }
    }

    /// Whether a write now can be a ring send: the ring does this stream's reads,
    /// and its loop is the one running on this thread. Outside its running loop no
    /// turn of the loop's would collect the send, so the caller writes at once.
    pub(crate) fn sends_by_ring_now(&self) -> bool {
        self.reads_by_ring() && !self.state.is_closed() && current::running_loop_ptr() == self.lp.as_ptr()
    }

    /// Starts a ring send of `buf[from..]`, done when every byte is out or it
    /// fails; the key to poll it by. On failure `buf` comes back. From the running
    /// loop it is queued for the loop's next submit; from outside it (the send after
    /// one the loop finished, for a writer used while its loop does not run) it is
    /// submitted at once, since no turn of the loop's is coming to.
    pub(crate) fn start_ring_send(&self, buf: Vec<u8>, from: usize) -> Result<OpKey, (io::Error, Vec<u8>)> {
        // The stream writer, the only caller, starts no send while one of the
        // stream's own (from before the writer took it) is in the kernel.
        let Some(lp) = self.lp.upgrade() else {
            return Err((Error::Closed.into(), buf));
        };
        let ring = Self::ring_of(&lp);
        let key = submit_send(ring, self.fd, buf, from, None)?;
        if current::running_loop_ptr() != self.lp.as_ptr() {
            ring.submit_queued();
        }
        Ok(key)
    }

    /// The outcome of ring send `key`: how many bytes it sent, and its buffer.
    pub(crate) fn poll_ring_send(&self, key: OpKey, cx: &mut Context<'_>) -> Poll<(io::Result<usize>, Vec<u8>)> {
        let Some(lp) = self.lp.upgrade() else {
            // The loop, and with it the send's buffer, is gone.
            return Poll::Ready((Err(Error::Closed.into()), Vec::new()));
        };
        Self::ring_of(&lp).poll_op(key, cx).map(send_outcome)
    }

    /// [`poll_ring_send`](Self::poll_ring_send) without waiting: `None` while the
    /// send is in the kernel (or its completion is not read yet).
    pub(crate) fn take_ring_send(&self, key: OpKey) -> Option<(io::Result<usize>, Vec<u8>)> {
        let Some(lp) = self.lp.upgrade() else {
            return Some((Err(Error::Closed.into()), Vec::new()));
        };
        Self::ring_of(&lp).take_done_op(key).map(send_outcome)
    }

    /// Cancels ring send `key` in the kernel: how much of it went out is unknown,
    /// and its buffer is freed once the kernel is done with it. A task that polled
    /// it is woken, to find it gone (a spurious wakeup where that task is the one
    /// cancelling).
    pub(crate) fn cancel_ring_send(&self, key: OpKey) {
        if let Some(lp) = self.lp.upgrade() {
            Self::ring_of(&lp).cancel_op_and_wake(key);
        }
    }

    fn ring_of(lp: &LoopInner) -> &UringPoller {
        lp.reactor.ring().expect("a source with ring reads is on a proactor loop")
    }

    /// The source's fd.
    pub(crate) fn fd(&self) -> RawFd {
        self.fd
    }

    /// Runs `op` on the source until it stops saying `WouldBlock`, waiting for
    /// readiness in direction `dir` in between. Polled from a task on another
    /// loop than the one it is registered with, it fails at once: that loop's
    /// reactor would never wake it.
    pub(crate) fn poll_io<R>(
        &self,
        dir: Direction,
        cx: &mut Context<'_>,
        mut op: impl FnMut(&S) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        if let Some(e) = self.misplaced() {
            return Poll::Ready(Err(e));
        }
        let source = self.get_ref();
        self.state.poll_io(dir, cx, || op(source))
    }

    /// The error for a source polled on another loop than its own; `None` on its
    /// own loop, outside any loop, or once its loop is closed (a socket of a closed
    /// loop says so instead, whichever loop polls it).
    fn misplaced(&self) -> Option<io::Error> {
        let running = current::running_loop_ptr();
        let elsewhere = !running.is_null() && running != self.lp.as_ptr();
        (elsewhere && !self.state.is_closed()).then(|| self.wrong_loop(running))
    }

    #[cold]
    fn wrong_loop(&self, running: *const LoopInner) -> io::Error {
        // SAFETY: `running` is the loop running on this thread (non-null), alive
        // while it runs.
        let polled_on = unsafe { &*running }.shared.name.clone();
        let registered = match self.lp.upgrade() {
            Some(lp) => format!("loop '{}'", lp.shared.name),
            None => "a loop that is gone".to_string(),
        };
        io::Error::other(format!(
            "this socket is registered with {registered} and was polled on loop \
             '{polled_on}': sockets (and child processes and their pipes) belong to the \
             loop that was current when they were created (create it on the loop that \
             uses it, from a std socket with from_std if need be)"
        ))
    }

    /// Runs `op` once, now, without waiting and without a task to wake: for work
    /// that may be done at once and is otherwise handed to a task (a stream writer's
    /// first attempt at a write). `WouldBlock` clears the readiness, so that the
    /// task's poll then waits for the next edge. Once the loop is closed it fails.
    pub(crate) fn try_io<R>(&self, dir: Direction, mut op: impl FnMut(&S) -> io::Result<R>) -> io::Result<R> {
        self.state.try_io(dir, || op(self.get_ref()))
    }

    /// A stream read or wrote less than asked (see [`IoState::drained`]).
    pub(crate) fn drained(&self, dir: Direction) {
        self.state.drained(dir);
    }

    /// [`poll_io`](Self::poll_io) as a future.
    pub(crate) async fn io<R>(
        &self,
        dir: Direction,
        mut op: impl FnMut(&S) -> io::Result<R>,
    ) -> io::Result<R> {
        poll_fn(|cx| self.poll_io(dir, cx, &mut op)).await
    }
}

/// This thread's loop ([`crate::get_event_loop`]), open, for making `what` on it;
/// otherwise an error that names `what` and says why not.
pub(crate) fn current_loop(what: &str) -> io::Result<EventLoop> {
    let lp = crate::get_event_loop()
        .map_err(|e| io::Error::other(format!("cannot create {what}: {e}")))?;
    if lp.is_closed() {
        return Err(io::Error::other(format!(
            "cannot create {what}: {}",
            Error::Closed
        )));
    }
    Ok(lp)
}

impl<S: Source> Drop for Registered<S> {
    fn drop(&mut self) {
        self.release();
    }
}

/// A send's completion as bytes sent or the error, with its buffer.
fn send_outcome((result, buf): (i32, Vec<u8>)) -> (io::Result<usize>, Vec<u8>) {
    match result {
        r if r < 0 => (Err(io::Error::from_raw_os_error(-r)), buf),
        r => (Ok(r as usize), buf),
    }
}
