//! The no-lost-wakeup handshake between a parking loop and the threads that send to it.
//!
//! The loop parks in `epoll_wait`; senders push to its inbox and must wake it, but a
//! write to the eventfd is a syscall, so it is made only when the loop is parked (or
//! about to park). The protocol is the classic store/fence/load pair on each side:
//!
//! - loop:   `sleeping = true; fence; if inbox is empty { park } ; sleeping = false`
//! - sender: `push; fence; if sleeping && swap(sleeping, false) { wake }`
//!
//! With both fences SeqCst, either the loop sees the pushed message when it re-checks
//! the inbox, or the sender sees `sleeping == true` and wakes it: never neither. The
//! loom model in this file checks every interleaving of that claim.

#[cfg(loom)]
use loom::sync::atomic::{fence, AtomicBool, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{fence, AtomicBool, Ordering};

/// The loop's "I am parked, ring me" flag.
#[derive(Debug)]
pub(crate) struct Doorbell {
    sleeping: AtomicBool,
}

impl Doorbell {
    pub(crate) fn new() -> Self {
        Doorbell {
            sleeping: AtomicBool::new(false),
        }
    }

    /// Sender side, after its message is in the queue: whether the sender must wake
    /// the loop. At most one of several racing senders gets `true`.
    pub(crate) fn must_ring(&self) -> bool {
        fence(Ordering::SeqCst);
        self.sleeping.load(Ordering::Relaxed) && self.sleeping.swap(false, Ordering::AcqRel)
    }

    /// Loop side, before re-checking its queue and parking.
    pub(crate) fn announce_sleep(&self) {
        self.sleeping.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// Loop side, once awake (or when it decided not to park).
    pub(crate) fn awake(&self) {
        self.sleeping.store(false, Ordering::Relaxed);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::Doorbell;
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::sync::{Arc, Condvar, Mutex};
    use loom::thread;

    /// An eventfd: a flag and a condvar. Parking on it with no ring ever coming is a
    /// deadlock, which loom reports: that is a lost wakeup.
    struct EventFd {
        set: Mutex<bool>,
        cv: Condvar,
    }

    impl EventFd {
        fn ring(&self) {
            *self.set.lock().unwrap() = true;
            self.cv.notify_one();
        }
        fn wait(&self) {
            let mut set = self.set.lock().unwrap();
            while !*set {
                set = self.cv.wait(set).unwrap();
            }
            *set = false;
        }
    }

    #[test]
    fn no_lost_wakeup_with_two_senders() {
        loom::model(|| {
            let bell = Arc::new(Doorbell::new());
            let queue = Arc::new(AtomicUsize::new(0));
            let efd = Arc::new(EventFd {
                set: Mutex::new(false),
                cv: Condvar::new(),
            });
            let senders: Vec<_> = (0..2)
                .map(|_| {
                    let (bell, queue, efd) = (bell.clone(), queue.clone(), efd.clone());
                    thread::spawn(move || {
                        queue.fetch_add(1, Ordering::Release);
                        if bell.must_ring() {
                            efd.ring();
                        }
                    })
                })
                .collect();
            // The loop: park until both messages have been seen.
            let mut seen = 0;
            while seen < 2 {
                let drained = queue.swap(0, Ordering::Acquire);
                seen += drained;
                if seen == 2 {
                    break;
                }
                bell.announce_sleep();
                if queue.load(Ordering::Acquire) == 0 {
                    efd.wait();
                }
                bell.awake();
            }
            for s in senders {
                s.join().unwrap();
            }
        });
    }
}
