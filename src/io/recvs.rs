//! Streams' receives on a proactor loop whose kernel takes provided-buffer rings:
//! each receive (`IORING_OP_RECV` with `IOSQE_BUFFER_SELECT`) waits in the kernel
//! with no buffer of the stream's; when bytes arrive the kernel picks a buffer from
//! the loop's [`BufRing`], and as the completion is read the bytes are copied into
//! the stream's queue here and the buffer goes back on the ring. A stream whose peer
//! is quiet so lends the kernel no buffer, and keeps a queue of at most
//! `KEPT_CAPACITY` bytes here.
//!
//! One receive of a stream is in the kernel at a time, submitted again once the
//! stream's reader has taken every byte of the last (read-ahead: the next message
//! then finds a receive waiting, with no turn of the loop lost), so bytes never come
//! out of order and the queue holds one receive's bytes while nobody reads. A
//! receive that filled its buffer says more are likely in the socket: the next read
//! takes them with `recv(2)` at once, into the queue, as many as the reader asks for
//! (up to `MAX_RECV`; a bulk transfer would get one buffer per turn otherwise).
//!
//! A receive that finds the ring empty fails with `ENOBUFS` (more streams received
//! in one turn than the ring has buffers); the stream's next read submits it again.
//!
//! A multishot receive (one submission for every message) was tried instead and
//! measured slower on the echo benchmarks (BENCHMARKS.md, "Receives into the ring's
//! buffers").
//!
//! A protocol transport's slot names its sink instead of waking tasks: a completion
//! reports the sink readable, and the transport takes the bytes when it runs, with
//! no waker (`cx` is `None`).

use std::io;
use std::os::fd::RawFd;
use std::task::Context;

use io_uring::cqueue;
use mio::Token;
use slab::Slab;

use super::buf_ring::{BufRing, BUFFER_SIZE};
use super::completion::{recv_now, MAX_RECV, MIN_RECV};
use super::wakers::{WaitList, Wakers};

/// A queue emptied with more capacity than this lets it go (an idle stream keeps
/// less).
const KEPT_CAPACITY: usize = 1024;

/// A key into the table: the receive's `user_data` is built from it.
pub(crate) type RecvKey = usize;

#[derive(Default)]
struct Receiving {
    /// Bytes received and not handed out yet: `queue[pos..]`.
    queue: Vec<u8>,
    pos: usize,
    /// What follows those bytes: the end of the stream (0) or an error (a negative
    /// errno), handed out once.
    end: Option<i32>,
    /// The tasks to wake when the receive completes (nearly always one).
    waiters: WaitList,
    /// The receive is in the kernel.
    live: bool,
    /// The last receive filled its buffer: more bytes are likely in the socket.
    full: bool,
    /// The stream went away: the slot is freed when the receive completes.
    orphaned: bool,
    /// The transport told of a completion (as readiness of this token), for a
    /// protocol's connection; none for a stream's tasks, which `waiters` holds.
    sink: Option<Token>,
}

/// What [`Recvs::poll`] asks of the ring.
pub(crate) enum Next {
    /// Bytes were taken (this many), or the end of the stream (`Ok(0)`) or an error.
    Ready(io::Result<usize>),
    /// Nothing is queued and no receive is in the kernel: submit one.
    Submit,
    /// Waiting for the receive in the kernel; `cx` is woken when it completes.
    Pending,
}

/// The receives of one ring.
#[derive(Default)]
pub(crate) struct Recvs {
    slots: Slab<Receiving>,
}

impl Recvs {
    /// A new stream's slot, with no receive in the kernel yet.
    pub(crate) fn insert(&mut self) -> RecvKey {
        self.slots.insert(Receiving::default())
    }

    /// Stream `key`'s completions are reported as readiness of `sink`, a transport.
    pub(crate) fn set_sink(&mut self, key: RecvKey, sink: Token) {
        self.slots[key].sink = Some(sink);
    }

    /// Whether `sink` is still the transport of slot `key` (a report filed before
    /// its slot went away is dropped, not sent to a token given out again).
    pub(crate) fn reports_to(&self, key: RecvKey, sink: Token) -> bool {
        self.slots.get(key).is_some_and(|s| !s.orphaned && s.sink == Some(sink))
    }

    /// A receive is about to be submitted (`true`), or could not be (`false`).
    pub(crate) fn set_live(&mut self, key: RecvKey, live: bool) {
        self.slots[key].live = live;
    }

    /// Hands the bytes queued to `take` (which returns how many it took, never 0 for
    /// data), or the end that follows them; with the socket likely not empty, takes
    /// up to `want` bytes from stream `fd` first with `recv(2)`. Else says whether a
    /// receive must be submitted or one is waited for (by `cx`, woken when it
    /// completes; with no `cx`, by the slot's sink).
    ///
    /// `Ready` with bytes says `true` beside it when the queue is drained and a
    /// receive should be submitted now (read-ahead).
    pub(crate) fn poll(
        &mut self,
        key: RecvKey,
        fd: RawFd,
        cx: Option<&mut Context<'_>>,
        want: usize,
        take: &mut dyn FnMut(&[u8]) -> usize,
    ) -> (Next, bool) {
        let slot = &mut self.slots[key];
        loop {
            if slot.pos < slot.queue.len() {
                let n = take(&slot.queue[slot.pos..]);
                slot.pos += n;
                let drained = slot.pos == slot.queue.len();
                if drained {
                    slot.pos = 0;
                    slot.queue.clear();
                    if slot.queue.capacity() > KEPT_CAPACITY {
                        slot.queue = Vec::new();
                    }
                }
                let read_ahead = drained && !slot.live && !slot.full && slot.end.is_none();
                return (Next::Ready(Ok(n)), read_ahead);
            }
            if want == 0 {
                return (Next::Ready(Ok(0)), false);
            }
            if let Some(end) = slot.end.take() {
                let r = if end == 0 { Ok(0) } else { Err(io::Error::from_raw_os_error(-end)) };
                return (Next::Ready(r), false);
            }
            if slot.live {
                if let Some(cx) = cx {
                    slot.waiters.add(cx.waker());
                }
                return (Next::Pending, false);
            }
            if !slot.full {
                return (Next::Submit, false);
            }
            slot.queue.reserve(want.clamp(MIN_RECV, MAX_RECV));
            match recv_now(fd, &mut slot.queue) {
                Ok(0) => {
                    slot.full = false;
                    return (Next::Ready(Ok(0)), false);
                }
                Ok(_) => slot.full = slot.queue.len() == slot.queue.capacity(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => slot.full = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    slot.full = false;
                    return (Next::Ready(Err(e)), false);
                }
            }
        }
    }

    /// The bytes queued and not read.
    pub(crate) fn queued(&self, key: RecvKey) -> usize {
        let slot = &self.slots[key];
        slot.queue.len() - slot.pos
    }

    /// Whether stream `key` has nothing here and no receive in the kernel (so a
    /// receive of its own would take its next bytes, in order).
    pub(crate) fn is_idle(&self, key: RecvKey) -> bool {
        let slot = &self.slots[key];
        !slot.live && !slot.full && slot.end.is_none() && slot.pos == slot.queue.len()
    }

    /// Whether receive `key` is in the kernel.
    pub(crate) fn is_live(&self, key: RecvKey) -> bool {
        self.slots.get(key).is_some_and(|s| s.live)
    }

    /// The kernel answered receive `key` with `result` and `flags`: the bytes of the
    /// buffer it picked are queued and the buffer given back to `bufs`. The tasks to
    /// wake, once the table is no longer borrowed, and the sink to tell.
    pub(crate) fn complete(
        &mut self,
        key: RecvKey,
        result: i32,
        flags: u32,
        bufs: &mut BufRing,
    ) -> (Wakers, Option<Token>) {
        let bid = cqueue::buffer_select(flags);
        let Some(slot) = self.slots.get_mut(key) else {
            // Not ours any more (cannot happen: a slot outlives its receive); the
            // buffer still goes back.
            if let Some(bid) = bid {
                bufs.give(bid);
            }
            return (Wakers::default(), None);
        };
        if let Some(bid) = bid {
            if result > 0 && !slot.orphaned {
                slot.queue.extend_from_slice(bufs.bytes(bid, result as usize));
            }
            bufs.give(bid);
        }
        slot.live = false;
        if slot.orphaned {
            self.slots.remove(key);
            return (Wakers::default(), None);
        }
        slot.full = result == BUFFER_SIZE as i32;
        // The end of the stream, or an error of the socket. A cancel (the stream
        // moving to another loop), an empty buffer ring (`ENOBUFS`) and a signal
        // (`EINTR`) are not the stream's: the next read submits again.
        if result == 0 || (result < 0 && !matches!(-result, libc::ECANCELED | libc::ENOBUFS | libc::EINTR)) {
            slot.end = Some(result);
        }
        (slot.waiters.take(), slot.sink)
    }

    /// The stream goes away: what it queued is dropped. Returns whether its receive
    /// is in the kernel (the caller cancels it; the slot stays until it completes),
    /// and the waiters, to be dropped once the table is no longer borrowed.
    pub(crate) fn orphan(&mut self, key: RecvKey) -> (bool, Wakers) {
        let slot = &mut self.slots[key];
        let waiters = slot.waiters.take();
        if !slot.live {
            self.slots.remove(key);
            return (false, waiters);
        }
        slot.queue = Vec::new();
        slot.pos = 0;
        slot.orphaned = true;
        (true, waiters)
    }

    /// Orphans every stream's slot, for a ring being torn down; the keys of the
    /// receives still in the kernel, to cancel.
    pub(crate) fn orphan_all(&mut self) -> Vec<RecvKey> {
        let keys: Vec<_> = self.slots.iter().map(|(key, _)| key).collect();
        keys.into_iter().filter(|&key| self.orphan(key).0).collect()
    }

    /// Whether `key` is still in the table.
    pub(crate) fn contains(&self, key: RecvKey) -> bool {
        self.slots.contains(key)
    }

    /// Whether no slot is left (no receive in the kernel).
    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The slots in the table (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// The bytes queued and not read, over all streams (for tests).
    #[cfg(test)]
    pub(crate) fn queued_total(&self) -> usize {
        self.slots.iter().map(|(_, s)| s.queue.len() - s.pos).sum()
    }

    /// The wakers of every receive waited for, taken out (for a loop closing).
    pub(crate) fn take_wakers(&mut self) -> Vec<Wakers> {
        self.slots.iter_mut().map(|(_, s)| s.waiters.take()).collect()
    }
}
