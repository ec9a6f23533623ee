//! The no-lost-wakeup handshake between a parking loop and the threads that send to it.
//!
//! The loop parks in `epoll_wait`; senders push to its inbox and must wake it, but a
//! write to the eventfd is a syscall, so it is made only when the loop is parked.
//! One atomic word carries both sides' news, so every step is a read-modify-write on
//! a single location and the argument needs no fences:
//!
//! - sender: `push; prev = fetch_or(NOTIFIED); if prev == SLEEPING { ring }` (the
//!   sender that finds the inbox empty, under the inbox's lock; the senders after it,
//!   until the loop takes the batch, skip this: see `mailbox.rs`)
//! - loop:   `if compare_exchange(0, SLEEPING) { park; fetch_and(!SLEEPING) }`, and
//!   drains its inbox whenever it takes NOTIFIED off.
//!
//! The loop only parks when no NOTIFIED is pending (its CAS from 0 succeeds); a sender
//! whose `fetch_or` comes after that CAS sees SLEEPING and rings; one whose `fetch_or`
//! came before it left NOTIFIED set, so the CAS fails and the loop drains instead.
//! Only the first sender after a park rings (later ones see NOTIFIED already set).
//! The loom model in this file checks every interleaving of that claim; the one in
//! `mailbox.rs` checks it again with only the first sender of a batch notifying.

#[cfg(loom)]
use loom::sync::atomic::{AtomicU8, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicU8, Ordering};

/// The loop is parked (or committed to parking).
const SLEEPING: u8 = 1;
/// Something was sent since the loop last looked.
const NOTIFIED: u8 = 2;

/// The loop's "ring me" state.
#[derive(Debug)]
pub(crate) struct Doorbell {
    state: AtomicU8,
}

impl Doorbell {
    pub(crate) fn new() -> Self {
        Doorbell {
            state: AtomicU8::new(0),
        }
    }

    /// Sender side, after its message is in the queue: whether the sender must wake
    /// the loop (the loop is parked and nobody rang yet).
    #[inline]
    pub(crate) fn notify(&self) -> bool {
        // Release: the loop's Acquire when it takes NOTIFIED off sees the push.
        self.state.fetch_or(NOTIFIED, Ordering::AcqRel) == SLEEPING
    }

    /// Loop side: whether something was sent since the last call (the caller then
    /// drains the inbox). Clears the news.
    #[inline]
    pub(crate) fn take_notified(&self) -> bool {
        self.state.load(Ordering::Relaxed) & NOTIFIED != 0
            && self.state.fetch_and(!NOTIFIED, Ordering::AcqRel) & NOTIFIED != 0
    }

    /// Loop side: whether something was sent since the last
    /// [`take_notified`](Self::take_notified), without clearing it.
    #[inline]
    pub(crate) fn has_news(&self) -> bool {
        self.state.load(Ordering::Acquire) & NOTIFIED != 0
    }

    /// Loop side: commits to parking unless news is pending. `true`: park now, then
    /// call [`woke`](Self::woke).
    pub(crate) fn try_sleep(&self) -> bool {
        self.state
            .compare_exchange(0, SLEEPING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Loop side, after a park. Leaves NOTIFIED alone for the next drain.
    pub(crate) fn woke(&self) {
        self.state.fetch_and(!SLEEPING, Ordering::AcqRel);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::Doorbell;
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::sync::{mpsc, Arc};
    use loom::thread;

    /// An eventfd: a counter that `wait` blocks on while it is zero, modelled as a
    /// channel. Parking with no ring ever coming is a deadlock, which loom reports:
    /// that is a lost wakeup.
    struct EventFd {
        tx: mpsc::Sender<()>,
        rx: mpsc::Receiver<()>,
    }

    /// The loop of `run_once`, reduced to its inbox: drain on news, park otherwise,
    /// until `expected` messages have arrived.
    fn run_loop(bell: &Doorbell, inbox: &AtomicUsize, efd: &EventFd, expected: usize) {
        let mut seen = 0;
        loop {
            if bell.take_notified() {
                seen += inbox.swap(0, Ordering::Acquire);
            }
            if seen == expected {
                return;
            }
            if bell.try_sleep() {
                efd.rx.recv().unwrap();
                bell.woke();
            }
        }
    }

    fn senders(n: usize) {
        loom::model(move || {
            let bell = Arc::new(Doorbell::new());
            let inbox = Arc::new(AtomicUsize::new(0));
            let (tx, rx) = mpsc::channel();
            let efd = Arc::new(EventFd { tx, rx });
            let threads: Vec<_> = (0..n)
                .map(|_| {
                    let (bell, inbox, efd) = (bell.clone(), inbox.clone(), efd.clone());
                    thread::spawn(move || {
                        inbox.fetch_add(1, Ordering::Release);
                        if bell.notify() {
                            efd.tx.send(()).unwrap();
                        }
                    })
                })
                .collect();
            run_loop(&bell, &inbox, &efd, n);
            for t in threads {
                t.join().unwrap();
            }
        });
    }

    #[test]
    fn no_lost_wakeup_with_one_sender() {
        senders(1);
    }

    #[test]
    fn no_lost_wakeup_with_two_senders() {
        senders(2);
    }
}
