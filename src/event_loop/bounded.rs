//! Backpressure: an optional bound on the jobs submitted to a loop from other threads.
//!
//! The inbox itself stays unbounded, so that task wakeups and `stop` are never refused
//! or delayed (a lost wakeup would hang a task). What is bounded is the number of
//! submitted jobs waiting in it: a submitter takes a *permit* before it queues a job
//! (`Msg::Submit`), and the loop gives the permit back when it takes the job out of
//! the inbox.
//!
//! Permits are `()` tokens in a flume channel pre-filled with `capacity` of them, which
//! gives an async take (other loops, and plain threads, which block on it by parking)
//! and a non-blocking take (`try_submit`) for free. Two properties of flume matter here:
//! an async take that is dropped before it completes leaves its token in the channel
//! (flume only *notifies* async receivers, it never hands them an item), so no permit
//! leaks; and the loop holds the channel's only sender, so closing the loop (which
//! drops it) wakes blocked submitters with an error instead of leaving them waiting.
//!
//! A submission from the loop's own thread never takes a permit: it goes straight to
//! the ready queue, so a loop can always submit to itself.

use super::handle::LoopHandle;
use super::LoopInner;

/// The submitters' side of a bounded inbox.
pub(crate) struct Permits {
    pub(super) tokens: flume::Receiver<()>,
    capacity: usize,
}

/// Makes the permits of an inbox bounded to `capacity` jobs (at least 1), and the
/// sender through which the loop gives them back. `None`: unbounded, no permits.
pub(crate) fn permits(capacity: Option<usize>) -> (Option<Permits>, Option<flume::Sender<()>>) {
    let Some(capacity) = capacity else {
        return (None, None);
    };
    let capacity = capacity.max(1);
    let (back, tokens) = flume::unbounded();
    for _ in 0..capacity {
        // Cannot fail: we hold the receiver.
        let _ = back.send(());
    }
    (Some(Permits { tokens, capacity }), Some(back))
}

impl LoopInner {
    /// Gives back the permits of `n` jobs just taken out of the inbox.
    pub(super) fn return_permits(&self, n: usize) {
        if let Some(back) = &*self.permit_return.borrow() {
            for _ in 0..n {
                // Cannot fail: `Shared` holds a receiver for as long as the loop lives.
                let _ = back.send(());
            }
        }
    }
}

impl LoopHandle {
    /// The bound on submitted jobs waiting in the inbox, if the loop has one
    /// ([`LoopBuilder::inbox_capacity`](crate::LoopBuilder::inbox_capacity)).
    pub fn inbox_capacity(&self) -> Option<usize> {
        self.shared.permits.as_ref().map(|p| p.capacity)
    }
}
