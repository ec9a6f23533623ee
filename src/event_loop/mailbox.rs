//! The inbox's queue: a lock around a `Vec` that the loop empties a batch at a time,
//! and that closes under the same lock that senders take.
//!
//! Senders push one message per lock; the loop swaps the whole `Vec` out under one
//! lock per iteration. Only the sender that finds the mailbox empty announces it (the
//! `first` callback of [`Mailbox::send`], which rings the doorbell), and it does so
//! under the lock: whenever the lock is free, a non-empty mailbox is announced. So a
//! later sender, which skips the doorbell's cache line, still returns only once its
//! message is announced (a send that happened before something the loop does is seen
//! by the loop's next look at the doorbell, which asyncio's one FIFO needs).
//!
//! Because `close` sets the flag and takes what is queued under the lock, a message
//! is either in the batch that `close` returns or refused: none can slip in after the
//! loop last looked and stay there unseen. The loom models below check these claims,
//! together with the doorbell, for every interleaving.

#[cfg(not(loom))]
use parking_lot::{Mutex, MutexGuard};

/// Under loom, its mutex (so the model sees every interleaving of the lock).
#[cfg(loom)]
struct Mutex<T>(loom::sync::Mutex<T>);
#[cfg(loom)]
type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;
#[cfg(loom)]
impl<T> Mutex<T> {
    fn new(v: T) -> Self {
        Mutex(loom::sync::Mutex::new(v))
    }
    fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap()
    }
}

struct Queue<M> {
    msgs: Vec<M>,
    closed: bool,
}

/// A multi-producer queue with one consumer (the loop).
pub(crate) struct Mailbox<M> {
    queue: Mutex<Queue<M>>,
}

impl<M> Mailbox<M> {
    pub(crate) fn new() -> Self {
        Mailbox {
            queue: Mutex::new(Queue {
                msgs: Vec::new(),
                closed: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue<M>> {
        self.queue.lock()
    }

    /// Queues `msg`, or gives it back if the mailbox is closed. If the mailbox was
    /// empty, runs `first` (under the lock: see the module's comment) and returns
    /// what it returned.
    pub(crate) fn send<R>(&self, msg: M, first: impl FnOnce() -> R) -> Result<Option<R>, M> {
        let mut queue = self.lock();
        if queue.closed {
            return Err(msg);
        }
        let was_empty = queue.msgs.is_empty();
        queue.msgs.push(msg);
        Ok(was_empty.then(first))
    }

    /// Swaps everything queued so far into `batch` (which must be empty).
    pub(crate) fn take_batch(&self, batch: &mut Vec<M>) {
        debug_assert!(batch.is_empty());
        std::mem::swap(&mut self.lock().msgs, batch);
    }

    /// Refuses every later message and returns the ones queued (for the caller to
    /// drop outside the lock).
    pub(crate) fn close(&self) -> Vec<M> {
        let mut queue = self.lock();
        queue.closed = true;
        std::mem::take(&mut queue.msgs)
    }

    /// How many messages wait.
    pub(crate) fn len(&self) -> usize {
        self.lock().msgs.len()
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::Mailbox;
    use crate::event_loop::doorbell::Doorbell;
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::sync::Arc;
    use loom::thread;

    /// Senders race the loop, which drains on news and then closes: every message a
    /// sender was told was accepted is in a drained batch or in what `close`
    /// returned, and none of them twice.
    fn race(senders: usize, drains: usize) {
        loom::model(move || {
            let mailbox = Arc::new(Mailbox::<usize>::new());
            let bell = Arc::new(Doorbell::new());
            let accepted = Arc::new(AtomicUsize::new(0));
            let threads: Vec<_> = (0..senders)
                .map(|i| {
                    let (mailbox, bell, accepted) =
                        (mailbox.clone(), bell.clone(), accepted.clone());
                    thread::spawn(move || {
                        if mailbox.send(i, || bell.notify()).is_ok() {
                            accepted.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                })
                .collect();
            let mut seen = Vec::new();
            let mut batch = Vec::new();
            for _ in 0..drains {
                if bell.take_notified() {
                    mailbox.take_batch(&mut batch);
                    seen.append(&mut batch);
                }
            }
            seen.extend(mailbox.close());
            for t in threads {
                t.join().unwrap();
            }
            // Every send after close was refused: nothing is left behind.
            assert_eq!(mailbox.len(), 0);
            assert_eq!(seen.len(), accepted.load(Ordering::Relaxed));
            seen.sort_unstable();
            seen.dedup();
            assert_eq!(seen.len(), accepted.load(Ordering::Relaxed));
        });
    }

    /// Only the sender that finds the mailbox empty rings: the loop, draining on news
    /// and parking otherwise (an eventfd modelled as a channel; parking with no ring
    /// coming is a deadlock, which loom reports), still gets every message.
    fn no_lost_wakeup(senders: usize) {
        loom::model(move || {
            let mailbox = Arc::new(Mailbox::<usize>::new());
            let bell = Arc::new(Doorbell::new());
            let (efd_tx, efd_rx) = loom::sync::mpsc::channel::<()>();
            let efd_tx = Arc::new(efd_tx);
            let threads: Vec<_> = (0..senders)
                .map(|i| {
                    let (mailbox, bell, efd_tx) = (mailbox.clone(), bell.clone(), efd_tx.clone());
                    thread::spawn(move || {
                        if mailbox.send(i, || bell.notify()) == Ok(Some(true)) {
                            efd_tx.send(()).unwrap();
                        }
                    })
                })
                .collect();
            let (mut seen, mut batch) = (0, Vec::new());
            while seen < senders {
                if bell.take_notified() {
                    mailbox.take_batch(&mut batch);
                    seen += batch.len();
                    batch.clear();
                } else if bell.try_sleep() {
                    efd_rx.recv().unwrap();
                    bell.woke();
                }
            }
            for t in threads {
                t.join().unwrap();
            }
        });
    }

    /// A send that happened before the loop looks (here: a flag the sender sets
    /// after its send, which the loop reads) is announced by then, even when
    /// another sender found the mailbox empty first and announces for both: the
    /// loop's look at the doorbell sees it, so the loop can take the mail before
    /// what it does next (`drain_inbox_first`).
    #[test]
    fn a_send_that_happened_before_is_announced() {
        loom::model(|| {
            let mailbox = Arc::new(Mailbox::<usize>::new());
            let bell = Arc::new(Doorbell::new());
            let sent = Arc::new(loom::sync::atomic::AtomicBool::new(false));
            let first = {
                let (mailbox, bell) = (mailbox.clone(), bell.clone());
                thread::spawn(move || {
                    let _ = mailbox.send(1, || bell.notify());
                })
            };
            let second = {
                let (mailbox, bell, sent) = (mailbox.clone(), bell.clone(), sent.clone());
                thread::spawn(move || {
                    let _ = mailbox.send(2, || bell.notify());
                    sent.store(true, Ordering::Release);
                })
            };
            if sent.load(Ordering::Acquire) {
                assert!(bell.has_news(), "a message sent before is not announced");
            }
            first.join().unwrap();
            second.join().unwrap();
        });
    }

    #[test]
    fn only_the_first_sender_rings_and_nothing_is_missed() {
        no_lost_wakeup(2);
    }

    #[test]
    fn close_races_one_sender() {
        race(1, 1);
    }

    #[test]
    fn close_races_two_senders() {
        race(2, 1);
    }
}
