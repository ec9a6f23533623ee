//! A listener's accepts on a proactor loop: one multishot `IORING_OP_ACCEPT` that
//! the kernel answers once per connection, each completion carrying the new
//! connection's fd (made non-blocking and close-on-exec by the kernel). No
//! readiness poll and no `accept(2)` call of ours.
//!
//! The kernel accepts whether or not anyone asks, so what it accepted waits here for
//! the listener's next `accept`, up to [`QUEUE_BOUND`] connections: past that the
//! multishot is cancelled, and the connections after it wait in the kernel's listen
//! backlog (which bounds them, as it does on epoll) until the queue is taken and the
//! accept is submitted again. A listener that is not accepting (a server backing
//! off, or one that stopped) on a running loop so holds about that many descriptors.
//! The bound is applied as completions are read: a loop that does not run for a
//! while (inside a long callback, or between `run_until_complete` calls) can find a
//! whole burst accepted, up to its listen backlog.
//!
//! The kernel ends a multishot accept on any error (`EMFILE`, say) and when its
//! completion queue overflows: the error is the listener's next result, and the
//! accept after it submits a new one. An error that follows connections of the same
//! accept is not reported, but tried again once those are taken: it is stale then
//! (the listener may have closed them, freeing the descriptors the kernel lacked),
//! and `accept(2)` on epoll would not have met it.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::task::{Context, Poll};

use slab::Slab;

use super::uring::UringPoller;
use super::wakers::{WaitList, Wakers};

/// Connections accepted and not taken yet, past which the kernel is asked to stop.
pub(crate) const QUEUE_BOUND: usize = 64;

/// A key into the table: the accept's `user_data` is built from it.
pub(crate) type AcceptKey = usize;

struct Accepting {
    /// What the kernel answered: fds of accepted connections, or errors (negative
    /// errnos), in order.
    queue: VecDeque<i32>,
    /// The tasks to wake when something comes (usually one).
    waiters: WaitList,
    /// The kernel's accept is still going: more completions will come.
    live: bool,
    /// The kernel's accept brought a connection already.
    accepted_any: bool,
    /// A cancel was sent (the queue reached its bound, or the listener went away).
    cancelled: bool,
    /// The listener went away: what still comes is closed, and the slot freed with
    /// the last completion.
    orphaned: bool,
}

/// What [`Accepts::poll`] found.
pub(crate) enum Next {
    /// A connection's fd, or an error (a negative errno).
    Accepted(i32),
    /// Nothing queued and the kernel's accept has ended: submit a new one.
    Ended,
}

/// What the ring must do after a completion.
pub(crate) struct Completed {
    /// The tasks to wake, once the table is no longer borrowed.
    pub(crate) wake: Wakers,
    /// The queue is at its bound: cancel the accept.
    pub(crate) cancel: bool,
}

/// The multishot accepts of one ring.
#[derive(Default)]
pub(crate) struct Accepts {
    slots: Slab<Accepting>,
}

impl Accepts {
    /// Records an accept about to be submitted; its key.
    pub(crate) fn insert(&mut self) -> AcceptKey {
        self.slots.insert(Accepting {
            queue: VecDeque::new(),
            waiters: WaitList::default(),
            live: true,
            accepted_any: false,
            cancelled: false,
            orphaned: false,
        })
    }

    /// An accept that never reached the kernel (submitting it failed).
    pub(crate) fn remove_unsubmitted(&mut self, key: AcceptKey) {
        self.slots.remove(key);
    }

    /// Submits a new accept in the slot of one that ended (same key).
    pub(crate) fn rearm(&mut self, key: AcceptKey) {
        let slot = &mut self.slots[key];
        slot.live = true;
        slot.accepted_any = false;
        slot.cancelled = false;
    }

    /// A re-armed accept could not be submitted: it is ended again (the next poll
    /// tries once more). The waiters, to wake once the table is no longer borrowed.
    pub(crate) fn unarm(&mut self, key: AcceptKey) -> Wakers {
        let slot = &mut self.slots[key];
        slot.live = false;
        slot.waiters.take()
    }

    /// Orphans every accept still in the kernel, for a ring being torn down (what
    /// they queued is closed); their keys, to cancel.
    pub(crate) fn orphan_all(&mut self) -> Vec<AcceptKey> {
        let keys: Vec<_> = self.slots.iter().map(|(key, _)| key).collect();
        keys.into_iter()
            .filter(|&key| self.orphan(key).0)
            .collect()
    }

    /// Whether no accept is left in the kernel (nor in the table).
    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The next connection (or error), if one came; else `cx` is woken when one
    /// does.
    pub(crate) fn poll(&mut self, key: AcceptKey, cx: &mut Context<'_>) -> Poll<Next> {
        let slot = &mut self.slots[key];
        if let Some(result) = slot.queue.pop_front() {
            return Poll::Ready(Next::Accepted(result));
        }
        if !slot.live {
            return Poll::Ready(Next::Ended);
        }
        slot.waiters.add(cx.waker());
        Poll::Pending
    }

    /// The kernel answered accept `key` with `result`; `more` says whether it goes on.
    pub(crate) fn complete(&mut self, key: AcceptKey, result: i32, more: bool) -> Completed {
        let none = Completed {
            wake: Wakers::default(),
            cancel: false,
        };
        let Some(slot) = self.slots.get_mut(key) else {
            // Not ours any more (cannot happen: a slot outlives its last completion);
            // a descriptor is still not left open.
            close_accepted(result);
            return none;
        };
        if slot.orphaned {
            close_accepted(result);
            if !more {
                self.slots.remove(key);
            }
            return none;
        }
        // Only a completion without `more` ends the accept (completions reaped out of
        // order, by `reap_early` inside `handle`, must not revive an ended one).
        if !more {
            slot.live = false;
        }
        // A cancelled accept (ours, at the bound) is no news for the listener, nor is
        // an error after connections (see the module's comment): the next accept
        // submits a new one.
        if result >= 0 {
            slot.accepted_any = true;
            slot.queue.push_back(result);
        } else if result != -libc::ECANCELED && !slot.accepted_any {
            slot.queue.push_back(result);
        }
        // At the bound, and again at each multiple of it should the kernel not have
        // taken the first cancel (it answers `EALREADY` to one that meets the accept
        // mid-way).
        let at_bound = slot.queue.len() >= QUEUE_BOUND && (!slot.cancelled || slot.queue.len() % QUEUE_BOUND == 0);
        let cancel = slot.live && at_bound;
        if cancel {
            slot.cancelled = true;
        }
        Completed {
            wake: slot.waiters.take(),
            cancel,
        }
    }

    /// The listener goes away: the connections queued are closed. Returns whether the
    /// kernel's accept is still going (the caller cancels it; the slot stays until its
    /// last completion), and the waiters, to be dropped once the table is no longer
    /// borrowed.
    pub(crate) fn orphan(&mut self, key: AcceptKey) -> (bool, Wakers) {
        let slot = &mut self.slots[key];
        slot.queue.drain(..).for_each(close_accepted);
        let waiters = slot.waiters.take();
        if !slot.live {
            self.slots.remove(key);
            return (false, waiters);
        }
        slot.orphaned = true;
        slot.cancelled = true;
        (true, waiters)
    }

    /// Whether `key` is still in the table.
    pub(crate) fn contains(&self, key: AcceptKey) -> bool {
        self.slots.contains(key)
    }

    /// The wakers of every accept waited for, taken out (for a loop closing).
    pub(crate) fn take_wakers(&mut self) -> Vec<Wakers> {
        self.slots
            .iter_mut()
            .map(|(_, s)| s.waiters.take())
            .collect()
    }
}

impl Drop for Accepts {
    /// The ring is going: connections accepted and never taken are closed.
    fn drop(&mut self) {
        for (_, slot) in self.slots.iter_mut() {
            slot.queue.drain(..).for_each(close_accepted);
        }
    }
}

/// Closes the connection an accept completion carries, if it carries one.
fn close_accepted(result: i32) {
    if result >= 0 {
        // SAFETY: a non-negative accept result is a descriptor the kernel just
        // installed for us, which nothing else knows of: this is its only owner.
        drop(unsafe { OwnedFd::from_raw_fd(result) });
    }
}

/// A listener's side of its ring accepts: the key of its accept, once submitted.
#[derive(Default)]
pub(crate) struct RingAccept {
    key: Cell<Option<AcceptKey>>,
}

impl RingAccept {
    /// The next connection on listener `fd`, submitting the accept first if it is
    /// not in the kernel (the first call, or after the kernel ended it).
    pub(crate) fn poll(&self, ring: &UringPoller, fd: RawFd, cx: &mut Context<'_>) -> Poll<io::Result<OwnedFd>> {
        loop {
            let key = match self.key.get() {
                Some(key) => key,
                None => {
                    let key = ring.start_accept(fd, None)?;
                    self.key.set(Some(key));
                    key
                }
            };
            match ring.poll_accept(key, cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Next::Accepted(fd)) if fd >= 0 => {
                    // SAFETY: a non-negative accept result is a descriptor the
                    // kernel installed for us, and the table handed it out once.
                    return Poll::Ready(Ok(unsafe { OwnedFd::from_raw_fd(fd) }));
                }
                Poll::Ready(Next::Accepted(errno)) => {
                    return Poll::Ready(Err(io::Error::from_raw_os_error(-errno)))
                }
                Poll::Ready(Next::Ended) => {
                    ring.start_accept(fd, Some(key))?;
                }
            }
        }
    }

    /// The listener goes away: its accept is stopped (see [`UringPoller::stop_accept`]).
    pub(crate) fn cancel(&self, ring: &UringPoller) {
        if let Some(key) = self.key.take() {
            ring.stop_accept(key);
        }
    }
}
