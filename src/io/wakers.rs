//! The tasks waiting for one completion of the ring (an operation's, an accept's, a
//! stream's receive): nearly always one, so the first is kept apart and waiting
//! allocates nothing. A list that allocated each time it was taken out and filled
//! again cost an allocation per message, and fragmented the allocator's pages enough
//! to show in the memory per idle connection (BENCHMARKS.md, "Receives into the
//! ring's buffers").

use std::task::Waker;

/// Who waits: the first task, and any others.
#[derive(Default)]
pub(crate) struct WaitList {
    first: Option<Waker>,
    more: Vec<Waker>,
}

impl WaitList {
    /// `waker` is woken when the completion comes (once, however often it asks).
    pub(crate) fn add(&mut self, waker: &Waker) {
        match &self.first {
            None => self.first = Some(waker.clone()),
            Some(w) if w.will_wake(waker) => {}
            Some(_) if self.more.iter().any(|w| w.will_wake(waker)) => {}
            Some(_) => self.more.push(waker.clone()),
        }
    }

    /// The waiting tasks, taken out: to be woken, or dropped, once the table that
    /// held them is no longer borrowed.
    pub(crate) fn take(&mut self) -> Wakers {
        Wakers(self.first.take(), std::mem::take(&mut self.more))
    }
}

/// Tasks taken out of a [`WaitList`].
#[derive(Default)]
pub(crate) struct Wakers(Option<Waker>, Vec<Waker>);

impl Wakers {
    pub(crate) fn wake(self) {
        if let Some(w) = self.0 {
            w.wake();
        }
        for w in self.1 {
            w.wake();
        }
    }
}
