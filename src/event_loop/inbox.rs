//! A loop's inbox, both ends: what other threads send (`Shared::send`, used by
//! `LoopHandle` and by task wakers on other threads) and the loop's drain of it into
//! the ready queue.
//!
//! One inbox per loop (a mutex around a `Vec`: a sender pushes under the lock, the
//! loop swaps the whole batch out under it, once per iteration) plus one
//! doorbell fd (an eventfd, `io::bell`). Only the sender that finds the inbox empty
//! tells the [`Doorbell`] (on a cache line of its own), and it writes the fd only when
//! the loop is parked. Callbacks travel by value ([`SendCall`]) and wait in the loop's
//! mail queue, each behind a `Ready::Mail` marker in the ready queue. A call made on the loop's own
//! thread while that loop runs skips the inbox and goes straight to the ready queue,
//! so threadsafe and plain calls from the loop thread share one FIFO.
//!
//! Closing happens under the same lock as sending: once the loop has closed its
//! inbox, every message that got in was taken out by the loop (and run or dropped),
//! and every later send is refused. No message is ever stranded in between.

use std::sync::atomic::AtomicBool;
use std::thread::ThreadId;

use super::bounded::Permits;
use crate::io::bell::Bell;
use super::doorbell::Doorbell;
use super::mailbox::Mailbox;
use super::ready::Ready;
use super::send_call::SendCall;
use super::LoopInner;
use crate::task::TaskRef;

/// What crosses threads into a loop.
pub(crate) enum Msg {
    /// A `call_soon_threadsafe` callback (or a submitted job).
    Call(SendCall),
    /// A submitted job holding a permit of a bounded inbox, given back when the loop
    /// takes it out.
    Submit(SendCall),
    /// A task woken on another thread (or while its loop was not running).
    Wake(TaskRef),
    /// The future of `run_until_complete` was woken on another thread.
    WakeMain,
    /// `LoopHandle::stop`.
    Stop,
}

/// A value alone on its cache line(s): the doorbell is written by the first sender
/// of each batch and read by the loop on every iteration, so nothing else should
/// share its line.
#[repr(align(128))]
pub(crate) struct CachePadded<T>(pub(crate) T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// The part of a loop that other threads may touch.
pub(crate) struct Shared {
    pub(crate) doorbell: CachePadded<Doorbell>,
    inbox: Mailbox<Msg>,
    bell: Bell,
    pub(crate) closed: AtomicBool,
    pub(crate) owner: ThreadId,
    pub(crate) name: String,
    /// Set when the inbox is bounded.
    pub(crate) permits: Option<Permits>,
}

impl Shared {
    pub(crate) fn new(
        bell: Bell,
        owner: ThreadId,
        name: String,
        permits: Option<Permits>,
    ) -> Self {
        Shared {
            doorbell: CachePadded(Doorbell::new()),
            inbox: Mailbox::new(),
            bell,
            closed: AtomicBool::new(false),
            owner,
            name,
            permits,
        }
    }

    /// Puts `msg` in the inbox and, if it was empty, tells the loop (waking it if it
    /// is parked). Gives the message back if the loop has closed its inbox.
    pub(crate) fn send(&self, msg: Msg) -> Result<(), Msg> {
        if self.inbox.send(msg, || self.doorbell.notify())? == Some(true) {
            self.bell.ring();
        }
        Ok(())
    }

    /// Loop side: swaps everything sent so far into `batch` (which must be empty),
    /// under one lock.
    pub(crate) fn take_batch(&self, batch: &mut Vec<Msg>) {
        self.inbox.take_batch(batch);
    }

    /// Loop side, closing: refuses every later message and returns the ones that got
    /// in (for the caller to drop outside the lock).
    pub(crate) fn close_inbox(&self) -> Vec<Msg> {
        self.inbox.close()
    }

    /// How many messages wait.
    pub(crate) fn inbox_len(&self) -> usize {
        self.inbox.len()
    }
}

/// The loop's end of the inbox.
impl LoopInner {
    /// Moves everything other threads sent into the ready queue, in one batch taken
    /// under one lock.
    #[inline]
    pub(super) fn drain_inbox(&self) {
        if !self.shared.doorbell.take_notified() {
            return;
        }
        let mut batch = self.inbox_batch.take();
        self.shared.take_batch(&mut batch);
        let mut permits = 0;
        {
            let mut ready = self.ready.borrow_mut();
            let mut mail = self.mail.borrow_mut();
            for msg in batch.drain(..) {
                match msg {
                    Msg::Call(f) => {
                        mail.push_back(f);
                        ready.push_back(Ready::Mail);
                    }
                    Msg::Submit(f) => {
                        permits += 1;
                        mail.push_back(f);
                        ready.push_back(Ready::Mail);
                    }
                    Msg::Wake(task) => ready.push_back(Ready::Task(task)),
                    Msg::WakeMain => ready.push_back(Ready::Entry(self.main_marker.clone())),
                    Msg::Stop => self.stopping.set(true),
                }
            }
        }
        self.inbox_batch.replace(batch);
        if permits > 0 {
            self.return_permits(permits);
        }
    }

    /// Mail that happened-before a call on the loop's thread runs before it
    /// (asyncio's one ready deque): one atomic load when there is none.
    #[inline]
    pub(super) fn drain_inbox_first(&self) {
        if self.shared.doorbell.has_news() {
            self.drain_inbox();
        }
    }
}
