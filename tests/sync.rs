//! `shardloop::sync` (API.md section 7), mirroring CPython's
//! `Lib/test/test_asyncio/test_locks.py` and `test_queues.py`: order, cancellation
//! of waiters at each point (their task cancelled, their wait dropped, or a timeout
//! around it), limits, and the counts `join` waits on.

#[path = "support/bounded.rs"]
mod bounded;

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use shardloop::sync::{
    BoundedSemaphore, Event, GetError, LifoQueue, Lock, PriorityQueue, PutError, Queue, Semaphore,
};
use shardloop::time::timeout;
use shardloop::{yield_now, EventLoop, Task};

use bounded::block_on;

fn lp() -> EventLoop {
    shardloop::new_event_loop().unwrap()
}

/// Lets every task that can run take a few steps.
async fn settle() {
    for _ in 0..5 {
        yield_now().await;
    }
}

type Log = Rc<RefCell<Vec<u32>>>;

fn log() -> Log {
    Rc::new(RefCell::new(Vec::new()))
}

/// How long a waiter under a timeout (asyncio's `wait_for`) waits before it gives
/// up. What it waits for never comes meanwhile, so the timeout always fires; no
/// result depends on how long it is.
const GIVE_UP: Duration = Duration::from_millis(10);

/// Whether `result` is the timeout's error.
fn timed_out<T>(result: Result<T, shardloop::Error>) -> bool {
    matches!(result, Err(shardloop::Error::Timeout))
}

/// Polls `fut` once from the running task (which it wakes as usual), for a wait
/// that the test then drops itself, as a `select` that took another branch does.
async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    poll_fn(|cx| Poll::Ready(Pin::new(&mut *fut).poll(cx))).await
}

// ---------------------------------------------------------------------------------
// Lock (test_locks.py LockTests)
// ---------------------------------------------------------------------------------

#[test]
fn lock_is_fifo_fair() {
    let lp = lp();
    let lock = Lock::new();
    let order = log();
    lp.run_until_complete(async {
        let first = lock.acquire().await;
        let tasks: Vec<Task<()>> = (1..=3)
            .map(|i| {
                let (lock, order) = (lock.clone(), order.clone());
                shardloop::spawn(async move {
                    let _g = lock.acquire().await;
                    order.borrow_mut().push(i);
                    yield_now().await; // hold it across a turn of the loop
                })
            })
            .collect();
        settle().await;
        assert!(order.borrow().is_empty(), "nobody got a held lock");
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
    })
    .unwrap();
    assert_eq!(*order.borrow(), [1, 2, 3]);
    assert!(!lock.locked());
}

#[test]
fn a_cancelled_lock_waiter_leaves_the_line() {
    let lp = lp();
    let lock = Lock::new();
    let order = log();
    lp.run_until_complete(async {
        let held = lock.acquire().await;
        let spawn = |i| {
            let (lock, order) = (lock.clone(), order.clone());
            shardloop::spawn(async move {
                let _g = lock.acquire().await;
                order.borrow_mut().push(i);
            })
        };
        let (a, b, c) = (spawn(1), spawn(2), spawn(3));
        settle().await;
        b.cancel(); // waiting in the middle of the line
        settle().await;
        drop(held);
        a.await.unwrap();
        assert!(matches!(b.await, Err(shardloop::Error::Cancelled)));
        c.await.unwrap();
    })
    .unwrap();
    assert_eq!(*order.borrow(), [1, 3]);
    assert!(!lock.locked());
}

#[test]
fn a_lock_handed_to_a_waiter_that_is_cancelled_goes_to_the_next() {
    // test_locks.py test_cancel_release_race: the release picks a waiter, which is
    // cancelled before it runs; the lock must not stay taken by nobody.
    let lp = lp();
    let lock = Lock::new();
    let order = log();
    lp.run_until_complete(async {
        let held = lock.acquire().await;
        let spawn = |i| {
            let (lock, order) = (lock.clone(), order.clone());
            shardloop::spawn(async move {
                let _g = lock.acquire().await;
                order.borrow_mut().push(i);
            })
        };
        let (a, b) = (spawn(1), spawn(2));
        settle().await;
        drop(held); // hands the lock to `a`...
        a.cancel(); // ...which is cancelled before it runs
        b.await.unwrap();
        assert!(a.await.is_err());
    })
    .unwrap();
    assert_eq!(*order.borrow(), [2]);
    assert!(!lock.locked());
}

#[test]
fn try_acquire_respects_the_line() {
    let lp = lp();
    let lock = Lock::new();
    lp.run_until_complete(async {
        let held = lock.try_acquire().expect("free");
        assert!(lock.try_acquire().is_none());
        let waiter = shardloop::spawn({
            let lock = lock.clone();
            async move { drop(lock.acquire().await) }
        });
        settle().await;
        drop(held);
        // Handed to the waiter, not up for grabs.
        assert!(lock.try_acquire().is_none());
        waiter.await.unwrap();
        assert!(lock.try_acquire().is_some());
    })
    .unwrap();
}

// ---------------------------------------------------------------------------------
// Event (EventTests)
// ---------------------------------------------------------------------------------

#[test]
fn event_set_wakes_every_waiter() {
    let lp = lp();
    let ev = Event::new();
    let woken = log();
    lp.run_until_complete(async {
        let tasks: Vec<Task<()>> = (1..=3)
            .map(|i| {
                let (ev, woken) = (ev.clone(), woken.clone());
                shardloop::spawn(async move {
                    ev.wait().await;
                    woken.borrow_mut().push(i);
                })
            })
            .collect();
        settle().await;
        assert!(woken.borrow().is_empty());
        ev.set();
        // Cleared again before the waiters run: they were woken by the set.
        ev.clear();
        for t in tasks {
            t.await.unwrap();
        }
    })
    .unwrap();
    assert_eq!(*woken.borrow(), [1, 2, 3]);
    assert!(!ev.is_set());
}

#[test]
fn event_wait_on_a_set_event_returns_at_once_and_clear_waits_again() {
    let lp = lp();
    let ev = Event::new();
    lp.run_until_complete(async {
        ev.set();
        ev.wait().await;
        ev.clear();
        let waiter = shardloop::spawn({
            let ev = ev.clone();
            async move { ev.wait().await }
        });
        settle().await;
        assert!(!waiter.is_finished());
        ev.set();
        waiter.await.unwrap();
    })
    .unwrap();
}

#[test]
fn a_cancelled_event_waiter_is_forgotten() {
    let lp = lp();
    let ev = Event::new();
    lp.run_until_complete(async {
        let w = shardloop::spawn({
            let ev = ev.clone();
            async move { ev.wait().await }
        });
        settle().await;
        w.cancel();
        settle().await;
        ev.set(); // wakes nobody, panics nobody
        assert!(matches!(w.await, Err(shardloop::Error::Cancelled)));
    })
    .unwrap();
}

// ---------------------------------------------------------------------------------
// Semaphore (SemaphoreTests)
// ---------------------------------------------------------------------------------

#[test]
fn semaphore_counts_permits_and_queues_in_order() {
    let lp = lp();
    let sem = Semaphore::new(2);
    let order = log();
    lp.run_until_complete(async {
        let a = sem.acquire().await;
        let b = sem.acquire().await;
        assert_eq!(sem.available_permits(), 0);
        assert!(sem.locked());
        let waiters: Vec<Task<()>> = (1..=3)
            .map(|i| {
                let (sem, order) = (sem.clone(), order.clone());
                shardloop::spawn(async move {
                    let _p = sem.acquire().await;
                    order.borrow_mut().push(i);
                })
            })
            .collect();
        settle().await;
        assert!(order.borrow().is_empty());
        drop(a);
        drop(b);
        for w in waiters {
            w.await.unwrap();
        }
        assert_eq!(sem.available_permits(), 2);
        assert!(!sem.locked());
    })
    .unwrap();
    assert_eq!(*order.borrow(), [1, 2, 3]);
}

#[test]
fn a_permit_handed_to_a_cancelled_waiter_is_passed_on() {
    let lp = lp();
    let sem = Semaphore::new(1);
    let order = log();
    lp.run_until_complete(async {
        let held = sem.acquire().await;
        let spawn = |i| {
            let (sem, order) = (sem.clone(), order.clone());
            shardloop::spawn(async move {
                let _p = sem.acquire().await;
                order.borrow_mut().push(i);
            })
        };
        let (a, b, c) = (spawn(1), spawn(2), spawn(3));
        settle().await;
        drop(held);
        a.cancel(); // had just been handed the permit
        b.cancel(); // still waiting
        c.await.unwrap();
        let _ = (a.await, b.await);
    })
    .unwrap();
    assert_eq!(*order.borrow(), [3]);
    assert_eq!(sem.available_permits(), 1, "no permit lost, none made up");
}

#[test]
fn release_and_forget_change_the_count() {
    let lp = lp();
    let sem = Semaphore::new(0);
    lp.run_until_complete(async {
        assert!(sem.try_acquire().is_none());
        sem.release();
        let p = sem.acquire().await;
        p.forget();
        assert_eq!(sem.available_permits(), 0);
    })
    .unwrap();
}

#[test]
fn bounded_semaphore_refuses_to_grow() {
    let lp = lp();
    let sem = BoundedSemaphore::new(1);
    assert!(matches!(sem.release(), Err(shardloop::Error::InvalidState)));
    lp.run_until_complete(async {
        let p = sem.acquire().await;
        p.forget();
        assert!(sem.release().is_ok(), "back to the initial count");
        assert!(sem.release().is_err());
        assert_eq!(sem.available_permits(), 1);
    })
    .unwrap();
}

// ---------------------------------------------------------------------------------
// Queue (test_queues.py)
// ---------------------------------------------------------------------------------

#[test]
fn queue_is_fifo_and_reports_its_size() {
    let lp = lp();
    let q = Queue::new(0);
    lp.run_until_complete(async {
        assert!(q.empty() && !q.full());
        for i in 0..5 {
            q.put(i).await.unwrap();
        }
        assert_eq!(q.qsize(), 5);
        assert!(!q.full(), "unbounded");
        for i in 0..5 {
            assert_eq!(q.get().await, Ok(i));
        }
        assert_eq!(q.get_nowait(), Err(GetError::Empty));
    })
    .unwrap();
}

#[test]
fn put_waits_while_full_and_put_nowait_gives_the_item_back() {
    let lp = lp();
    let q = Queue::new(2);
    lp.run_until_complete(async {
        q.put_nowait(1).unwrap();
        q.put(2).await.unwrap();
        assert!(q.full());
        let refused = q.put_nowait(3).unwrap_err();
        assert!(matches!(refused, PutError::Full(3)));
        let putter = shardloop::spawn({
            let q = q.clone();
            async move { q.put(3).await.is_ok() }
        });
        settle().await;
        assert!(!putter.is_finished(), "waits while full");
        assert_eq!(q.get().await, Ok(1));
        assert!(putter.await.unwrap());
        assert_eq!(q.get_nowait(), Ok(2));
        assert_eq!(q.get_nowait(), Ok(3));
    })
    .unwrap();
    assert_eq!(q.maxsize(), 2);
}

#[test]
fn getters_are_served_in_order() {
    let lp = lp();
    let q = Queue::new(0);
    let got = log();
    lp.run_until_complete(async {
        let getters: Vec<Task<()>> = (0..3)
            .map(|_| {
                let (q, got) = (q.clone(), got.clone());
                shardloop::spawn(async move {
                    let v = q.get().await.unwrap();
                    got.borrow_mut().push(v);
                })
            })
            .collect();
        settle().await;
        for v in [10, 20, 30] {
            q.put(v).await.unwrap();
        }
        for g in getters {
            g.await.unwrap();
        }
    })
    .unwrap();
    assert_eq!(*got.borrow(), [10, 20, 30]);
}

#[test]
fn a_cancelled_getter_loses_no_item() {
    // test_queues.py test_cancelled_getters_not_being_held_in_self_getters and
    // test_get_cancelled_race: the item a cancelled getter was woken for goes to
    // the next getter.
    let lp = lp();
    let q = Queue::new(0);
    lp.run_until_complete(async {
        let spawn_get = || {
            let q = q.clone();
            shardloop::spawn(async move { q.get().await })
        };
        let (a, b) = (spawn_get(), spawn_get());
        settle().await;
        q.put_nowait(1).unwrap(); // wakes `a`...
        a.cancel(); // ...which is cancelled before it takes the item
        assert_eq!(b.await.unwrap(), Ok(1));
        assert!(a.await.is_err());
        assert!(q.empty());
    })
    .unwrap();
}

#[test]
fn a_cancelled_putter_puts_nothing_and_passes_the_room_on() {
    let lp = lp();
    let q = Queue::new(1);
    lp.run_until_complete(async {
        q.put(0).await.unwrap();
        let spawn_put = |v| {
            let q = q.clone();
            shardloop::spawn(async move { q.put(v).await.is_ok() })
        };
        let (a, b) = (spawn_put(1), spawn_put(2));
        settle().await;
        assert_eq!(q.get().await, Ok(0)); // room for `a`...
        a.cancel(); // ...cancelled before it puts
        assert!(b.await.unwrap());
        assert!(a.await.is_err());
        assert_eq!(q.get_nowait(), Ok(2));
        assert!(q.empty());
    })
    .unwrap();
}

#[test]
fn join_waits_for_every_task_done() {
    let lp = lp();
    let q = Queue::new(0);
    let done = log();
    lp.run_until_complete(async {
        // Nothing put: join returns at once.
        q.join().await;
        for i in 0..3 {
            q.put(i).await.unwrap();
        }
        let worker = shardloop::spawn({
            let (q, done) = (q.clone(), done.clone());
            async move {
                for _ in 0..3 {
                    let v = q.get().await.unwrap();
                    yield_now().await;
                    done.borrow_mut().push(v);
                    q.task_done().unwrap();
                }
            }
        });
        q.join().await;
        assert_eq!(
            *done.borrow(),
            [0, 1, 2],
            "join returned after the last task_done"
        );
        worker.await.unwrap();
        assert!(matches!(q.task_done(), Err(shardloop::Error::InvalidState)));
    })
    .unwrap();
}

#[test]
fn lifo_and_priority_queues_hand_items_out_in_their_order() {
    // test_queues.py LifoQueueTests.test_order and PriorityQueueTests.test_order.
    let lp = lp();
    lp.run_until_complete(async {
        let lifo = LifoQueue::new(0);
        let prio = PriorityQueue::new(0);
        for v in [1, 3, 2] {
            lifo.put(v).await.unwrap();
            prio.put((v, format!("job {v}"))).await.unwrap();
        }
        let mut lifo_out = Vec::new();
        let mut prio_out = Vec::new();
        while let Ok(v) = lifo.get_nowait() {
            lifo_out.push(v);
        }
        while let Ok((p, _)) = prio.get_nowait() {
            prio_out.push(p);
        }
        assert_eq!(lifo_out, [2, 3, 1]);
        assert_eq!(prio_out, [1, 2, 3]);
        // Bounds and waiting work the same in every order.
        let bounded = PriorityQueue::new(1);
        bounded.put(5).await.unwrap();
        assert!(matches!(bounded.put_nowait(4), Err(PutError::Full(4))));
    })
    .unwrap();
}

#[test]
fn shutdown_fails_puts_and_lets_gets_drain_what_is_left() {
    // test_queues.py (3.13) test_shutdown_empty / test_shutdown_nonempty /
    // test_shutdown_putter: a waiting putter wakes with its item back, the items
    // left still come out, then gets fail.
    let lp = lp();
    let q = Queue::new(2);
    lp.run_until_complete(async {
        q.put(1).await.unwrap();
        q.put(2).await.unwrap();
        let putter = shardloop::spawn({
            let q = q.clone();
            async move { q.put(3).await.map_err(PutError::into_inner) }
        });
        settle().await;
        q.shutdown(false);
        assert!(q.is_shut_down());
        assert_eq!(
            putter.await.unwrap(),
            Err(3),
            "the waiting put got its item back"
        );
        assert!(matches!(q.put_nowait(4), Err(PutError::ShutDown(4))));
        assert_eq!(q.get().await, Ok(1));
        assert_eq!(q.get_nowait(), Ok(2));
        assert_eq!(q.get().await, Err(GetError::ShutDown));
        assert_eq!(q.get_nowait(), Err(GetError::ShutDown));
    })
    .unwrap();
}

#[test]
fn shutdown_wakes_every_getter_and_immediate_drops_the_items() {
    // test_queues.py (3.13) test_shutdown_getter / test_shutdown_immediate_*: waiting
    // getters wake with ShutDown; `immediate` empties the queue and releases join.
    let lp = lp();
    let q = Queue::<u32>::new(0);
    lp.run_until_complete(async {
        let getters: Vec<Task<Result<u32, GetError>>> = (0..3)
            .map(|_| {
                let q = q.clone();
                shardloop::spawn(async move { q.get().await })
            })
            .collect();
        settle().await;
        q.shutdown(false);
        for g in getters {
            assert_eq!(g.await.unwrap(), Err(GetError::ShutDown));
        }
        let q = Queue::<u32>::new(0);
        q.put(1).await.unwrap();
        q.put(2).await.unwrap();
        let joiner = shardloop::spawn({
            let q = q.clone();
            async move { q.join().await }
        });
        settle().await;
        assert!(!joiner.is_finished());
        q.shutdown(true);
        assert!(q.empty());
        assert_eq!(q.get_nowait(), Err(GetError::ShutDown));
        joiner.await.unwrap();
    })
    .unwrap();
}

// ---------------------------------------------------------------------------------
// Condition and Barrier (ConditionTests, BarrierTests)
// ---------------------------------------------------------------------------------

#[test]
fn condition_notify_wakes_the_oldest_waiters_with_the_lock_held() {
    use shardloop::sync::Condition;
    let lp = lp();
    let cond = Condition::new();
    let order = log();
    lp.run_until_complete(async {
        let waiters: Vec<Task<()>> = (1..=3)
            .map(|i| {
                let (cond, order) = (cond.clone(), order.clone());
                shardloop::spawn(async move {
                    let g = cond.acquire().await;
                    let _g = cond.wait(g).await;
                    assert!(cond.locked(), "wait returns with the lock held");
                    order.borrow_mut().push(i);
                })
            })
            .collect();
        settle().await;
        assert!(!cond.locked(), "waiting released the lock");
        cond.notify(2);
        settle().await;
        assert_eq!(*order.borrow(), [1, 2]);
        cond.notify_all();
        for w in waiters {
            w.await.unwrap();
        }
    })
    .unwrap();
    assert_eq!(*order.borrow(), [1, 2, 3]);
}

#[test]
fn a_notify_meant_for_a_cancelled_waiter_goes_to_the_next() {
    use shardloop::sync::Condition;
    let lp = lp();
    let cond = Condition::new();
    let order = log();
    lp.run_until_complete(async {
        let spawn = |i| {
            let (cond, order) = (cond.clone(), order.clone());
            shardloop::spawn(async move {
                let g = cond.acquire().await;
                let _g = cond.wait(g).await;
                order.borrow_mut().push(i);
            })
        };
        let (a, b) = (spawn(1), spawn(2));
        settle().await;
        cond.notify(1); // for `a`...
        a.cancel(); // ...cancelled before it runs
        b.await.unwrap();
        assert!(a.await.is_err());
    })
    .unwrap();
    assert_eq!(*order.borrow(), [2]);
}

#[test]
fn barrier_lets_a_full_round_go_and_starts_over() {
    use shardloop::sync::Barrier;
    let lp = lp();
    let barrier = Barrier::new(3);
    lp.run_until_complete(async {
        for _round in 0..2 {
            let tasks: Vec<Task<usize>> = (0..3)
                .map(|_| {
                    let b = barrier.clone();
                    shardloop::spawn(async move { b.wait().await.unwrap() })
                })
                .collect();
            let mut indices = Vec::new();
            for t in tasks {
                indices.push(t.await.unwrap());
            }
            indices.sort();
            assert_eq!(indices, [0, 1, 2]);
            assert_eq!(barrier.n_waiting(), 0);
        }
        // One that gives up before the round fills leaves the count.
        let quitter = shardloop::spawn({
            let b = barrier.clone();
            async move { b.wait().await }
        });
        settle().await;
        assert_eq!(barrier.n_waiting(), 1);
        quitter.cancel();
        settle().await;
        assert_eq!(barrier.n_waiting(), 0);
        assert!(quitter.await.is_err());
    })
    .unwrap();
}

#[test]
fn barrier_reset_and_abort_fail_the_waiters_with_broken_barrier() {
    // test_locks.py BarrierTests.test_reset_barrier / test_abort_barrier /
    // test_reset_barrier_while_tasks_waiting.
    use shardloop::sync::{Barrier, BrokenBarrier};
    let lp = lp();
    let barrier = Barrier::new(3);
    let wait_on = |b: &Barrier| {
        let b = b.clone();
        shardloop::spawn(async move { b.wait().await })
    };
    lp.run_until_complete(async {
        let (a, b) = (wait_on(&barrier), wait_on(&barrier));
        settle().await;
        barrier.reset();
        assert_eq!(a.await.unwrap(), Err(BrokenBarrier));
        assert_eq!(b.await.unwrap(), Err(BrokenBarrier));
        assert!(!barrier.broken() && barrier.n_waiting() == 0);
        // Whole again: a full round goes through.
        let round: Vec<_> = (0..3).map(|_| wait_on(&barrier)).collect();
        for t in round {
            assert!(t.await.unwrap().is_ok());
        }
        // Abort breaks the waiters and every later wait, until reset.
        let waiting = wait_on(&barrier);
        settle().await;
        barrier.abort();
        assert!(barrier.broken());
        assert_eq!(waiting.await.unwrap(), Err(BrokenBarrier));
        assert_eq!(barrier.wait().await, Err(BrokenBarrier));
        barrier.reset();
        let round: Vec<_> = (0..3).map(|_| wait_on(&barrier)).collect();
        for t in round {
            assert!(t.await.unwrap().is_ok());
        }
    })
    .unwrap();
}

// ---------------------------------------------------------------------------------
// Timeouts (asyncio.wait_for) on every wait: the waiter that gave up leaves the
// line, so what is released next goes to the next waiter in order (test_locks.py
// test_acquire_cancel and ConditionTests.test_timeout_in_block, test_queues.py
// test_cancelled_getters_not_being_held_in_self_getters and
// test_cancelled_puts_not_being_held_in_self_putters). A waiter left in the line
// would be handed the lock, the permit or the wakeup and drop it: the counts below
// would be off, or the next waiter would hang until the bound of `block_on`.
// ---------------------------------------------------------------------------------

#[test]
fn a_timed_out_acquire_leaves_the_line() {
    let order = log();
    block_on(async {
        let lock = Lock::new();
        let held = lock.acquire().await;
        assert!(timed_out(timeout(GIVE_UP, lock.acquire()).await));
        assert!(lock.locked(), "still held by `held`");
        drop(held);
        assert!(
            !lock.locked(),
            "released to nobody: the one that gave up is gone"
        );

        // Giving up in the middle of the line: the lock goes to the next in order.
        let held = lock.acquire().await;
        let spawn = |i, give_up: bool| {
            let (lock, order) = (lock.clone(), order.clone());
            shardloop::spawn(async move {
                if give_up {
                    return timed_out(timeout(GIVE_UP, lock.acquire()).await);
                }
                let _g = lock.acquire().await;
                order.borrow_mut().push(i);
                true
            })
        };
        let first = spawn(1, false);
        settle().await;
        let quitter = spawn(2, true);
        settle().await;
        let last = spawn(3, false);
        assert!(quitter.await.unwrap(), "timed out: the lock was held");
        drop(held);
        assert!(first.await.unwrap() && last.await.unwrap());
        assert!(!lock.locked());

        // A semaphore's count: the permits given back are free again, none handed to
        // the waiter that gave up, and nobody is left waiting (`locked` is false).
        let sem = Semaphore::new(2);
        let (a, b) = (sem.acquire().await, sem.acquire().await);
        assert!(timed_out(timeout(GIVE_UP, sem.acquire()).await));
        assert_eq!(sem.available_permits(), 0);
        drop(a);
        assert_eq!(sem.available_permits(), 1);
        assert!(!sem.locked(), "no waiter left in line");
        drop(b);
        assert_eq!(sem.available_permits(), 2);
        let _both = (sem.try_acquire().unwrap(), sem.try_acquire().unwrap());
    });
    assert_eq!(*order.borrow(), [1, 3]);
}

#[test]
fn a_timed_out_get_leaves_the_line() {
    block_on(async {
        let q = Queue::new(5);
        assert!(timed_out(timeout(GIVE_UP, q.get()).await));
        // Nobody waits: an item put is there for the next get, which takes it.
        q.put_nowait(1).unwrap();
        assert_eq!(q.qsize(), 1);
        assert_eq!(q.get().await, Ok(1));

        // A getter that gave up between two others: each item put wakes the next
        // getter still waiting, in order.
        let spawn_get = |give_up: bool| {
            let q = q.clone();
            shardloop::spawn(async move {
                if give_up {
                    timeout(GIVE_UP, q.get()).await.ok()
                } else {
                    Some(q.get().await)
                }
            })
        };
        let first = spawn_get(false);
        settle().await;
        let quitter = spawn_get(true);
        settle().await;
        let last = spawn_get(false);
        assert_eq!(quitter.await.unwrap(), None, "timed out on an empty queue");
        q.put_nowait(10).unwrap();
        assert_eq!(first.await.unwrap(), Some(Ok(10)));
        q.put_nowait(20).unwrap();
        assert_eq!(last.await.unwrap(), Some(Ok(20)));
        assert!(q.empty());
    });
}

#[test]
fn a_timed_out_put_enqueues_nothing_and_leaves_the_line() {
    // test_queues.py test_put_cancel_drop: the item of a put that gave up is not in
    // the queue, and does not count for join.
    block_on(async {
        let q = Queue::<Rc<u32>>::new(1);
        q.put_nowait(Rc::new(0)).unwrap();
        let item = Rc::new(1);
        assert!(timed_out(timeout(GIVE_UP, q.put(item.clone())).await));
        assert_eq!(Rc::strong_count(&item), 1, "dropped with the put, not kept");
        assert_eq!(q.qsize(), 1);
        assert!(q.full());

        // A putter that gave up between two others: the room made by each get goes
        // to the next putter still waiting, in order.
        let spawn_put = |v: u32, give_up: bool| {
            let q = q.clone();
            shardloop::spawn(async move {
                if give_up {
                    timed_out(timeout(GIVE_UP, q.put(Rc::new(v))).await)
                } else {
                    q.put(Rc::new(v)).await.is_ok()
                }
            })
        };
        let first = spawn_put(2, false);
        settle().await;
        let quitter = spawn_put(3, true);
        settle().await;
        let last = spawn_put(4, false);
        assert!(quitter.await.unwrap(), "timed out on a full queue");
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(*q.get().await.unwrap());
            q.task_done().unwrap();
        }
        assert!(first.await.unwrap() && last.await.unwrap());
        assert_eq!(got, [0, 2, 4]);
        assert!(q.empty());
        // Three items were put, three marked done: nothing more counted.
        assert!(matches!(q.task_done(), Err(shardloop::Error::InvalidState)));
        q.join().await;
    });
}

#[test]
fn timed_out_event_and_condition_waits_leave_the_line() {
    use shardloop::sync::Condition;
    let order = log();
    block_on(async {
        let ev = Event::new();
        assert!(timed_out(timeout(GIVE_UP, ev.wait()).await));
        let waiter = shardloop::spawn({
            let ev = ev.clone();
            async move { ev.wait().await }
        });
        settle().await;
        ev.set();
        waiter.await.unwrap();
        assert!(ev.is_set());

        // A condition wait that gave up released the lock with its guard, and the
        // next notify goes to a waiter still there.
        let cond = Condition::new();
        let guard = cond.acquire().await;
        assert!(timed_out(timeout(GIVE_UP, cond.wait(guard)).await));
        assert!(!cond.locked(), "the guard went with the wait");
        let spawn = |i, give_up: bool| {
            let (cond, order) = (cond.clone(), order.clone());
            shardloop::spawn(async move {
                let g = cond.acquire().await;
                if give_up {
                    return timed_out(timeout(GIVE_UP, cond.wait(g)).await);
                }
                let _g = cond.wait(g).await;
                order.borrow_mut().push(i);
                true
            })
        };
        let quitter = spawn(1, true);
        settle().await;
        let waiter = spawn(2, false);
        assert!(quitter.await.unwrap(), "timed out: nobody notified");
        cond.notify(1); // one notify, for the only one still waiting
        assert!(waiter.await.unwrap());
        assert!(!cond.locked());
    });
    assert_eq!(*order.borrow(), [2]);
}

// ---------------------------------------------------------------------------------
// Woken, then cancelled (the task cancelled, or the wait dropped) in the same turn,
// before it runs (test_locks.py test_cancel_race, test_queues.py
// test_get_cancel_drop_one_pending_reader / _many_pending_readers): the others woken
// still wake, and nothing is lost.
// ---------------------------------------------------------------------------------

#[test]
fn joiners_and_event_waiters_woken_then_cancelled_do_not_stop_the_others() {
    block_on(async {
        let q = Queue::new(0);
        q.put_nowait(1).unwrap();
        let spawn_join = || {
            let q = q.clone();
            shardloop::spawn(async move { q.join().await })
        };
        let joiners: Vec<Task<()>> = (0..3).map(|_| spawn_join()).collect();
        let mut mine = Box::pin(q.join());
        assert!(poll_once(&mut mine).await.is_pending());
        settle().await;
        assert!(joiners.iter().all(|j| !j.is_finished()));
        q.get_nowait().unwrap();
        q.task_done().unwrap(); // wakes every joiner...
        joiners[1].cancel(); // ...of which one is cancelled before it runs
        drop(mine); // and one dropped
        let results: Vec<_> = {
            let mut rs = Vec::new();
            for j in joiners {
                rs.push(j.await);
            }
            rs
        };
        assert!(results[0].is_ok() && results[2].is_ok());
        assert!(matches!(results[1], Err(shardloop::Error::Cancelled)));
        q.join().await; // nothing unfinished
        assert!(matches!(q.task_done(), Err(shardloop::Error::InvalidState)));

        let ev = Event::new();
        let spawn_wait = || {
            let ev = ev.clone();
            shardloop::spawn(async move { ev.wait().await })
        };
        let waiters: Vec<Task<()>> = (0..3).map(|_| spawn_wait()).collect();
        let mut mine = Box::pin(ev.wait());
        assert!(poll_once(&mut mine).await.is_pending());
        settle().await;
        ev.set();
        ev.clear(); // the woken still return
        waiters[0].cancel();
        drop(mine);
        let mut waiters = waiters.into_iter();
        assert!(matches!(
            waiters.next().unwrap().await,
            Err(shardloop::Error::Cancelled)
        ));
        for w in waiters {
            w.await.unwrap();
        }
        // The cancelled woke nobody else: a new waiter waits for the next set.
        let later = spawn_wait();
        settle().await;
        assert!(!later.is_finished(), "the event is clear");
        ev.set();
        later.await.unwrap();
    });
}

#[test]
fn a_joiner_woken_then_dropped_does_not_release_a_later_join_early() {
    // asyncio's join waits on an Event that put clears: a join that started after
    // new work was put waits for that work, whatever became of earlier joiners.
    block_on(async {
        let q = Queue::new(0);
        q.put_nowait(1).unwrap();
        let mut early = Box::pin(q.join());
        assert!(poll_once(&mut early).await.is_pending());
        q.get_nowait().unwrap();
        q.task_done().unwrap(); // wakes `early`
        q.put_nowait(2).unwrap(); // new work, unfinished
        let late = shardloop::spawn({
            let q = q.clone();
            async move { q.join().await }
        });
        settle().await;
        assert!(!late.is_finished(), "item 2 is not done");
        drop(early); // woken, never saw it (a select that took another branch)
        settle().await;
        assert!(
            !late.is_finished(),
            "join returned while item 2 was unfinished"
        );
        assert_eq!(q.get_nowait(), Ok(2));
        q.task_done().unwrap();
        late.await.unwrap();

        // The same with the early joiner's task cancelled: `late` joins in the turn
        // that the cancelled one runs in, just before it.
        q.put_nowait(3).unwrap();
        let early = shardloop::spawn({
            let q = q.clone();
            async move { q.join().await }
        });
        let go = Event::new();
        let late = shardloop::spawn({
            let (q, go) = (q.clone(), go.clone());
            async move {
                go.wait().await;
                q.join().await
            }
        });
        settle().await;
        go.set(); // `late` runs next turn, first
        assert_eq!(q.get_nowait(), Ok(3));
        q.task_done().unwrap(); // wakes `early`, to run after `late`
        early.cancel();
        q.put_nowait(4).unwrap(); // new work: `late` joins while it is unfinished
        settle().await;
        assert!(early.await.is_err());
        assert!(
            !late.is_finished(),
            "join returned while item 4 was unfinished"
        );
        assert_eq!(q.get_nowait(), Ok(4));
        q.task_done().unwrap();
        late.await.unwrap();
    });
}

#[test]
fn a_getter_woken_then_cancelled_leaves_its_item() {
    // A woken getter takes its item when it runs: cancelled (or dropped) before
    // that, it leaves the item in the queue, for the next getter in line or the
    // next get.
    block_on(async {
        let q = Queue::new(0);
        let spawn_get = || {
            let q = q.clone();
            shardloop::spawn(async move { q.get().await })
        };
        let reader = spawn_get();
        settle().await;
        q.put_nowait(1).unwrap(); // wakes `reader`...
        q.put_nowait(2).unwrap();
        reader.cancel(); // ...cancelled before it runs
        assert!(matches!(reader.await, Err(shardloop::Error::Cancelled)));
        assert_eq!(q.qsize(), 2, "both items still in the queue");
        // "If we get 2, it means 1 got dropped!"
        assert_eq!(spawn_get().await.unwrap(), Ok(1));
        assert_eq!(q.get_nowait(), Ok(2));

        // Three getters, the first two woken and then dropped / cancelled: the third
        // gets the first item, and the second stays in the queue.
        let mut mine = Box::pin(q.get());
        assert!(poll_once(&mut mine).await.is_pending());
        let (second, third) = (spawn_get(), spawn_get());
        settle().await;
        q.put_nowait(10).unwrap(); // wakes `mine`
        q.put_nowait(20).unwrap(); // wakes `second`
        drop(mine);
        second.cancel();
        assert_eq!(third.await.unwrap(), Ok(10));
        assert!(second.await.is_err());
        assert_eq!(q.qsize(), 1);
        assert_eq!(q.get_nowait(), Ok(20));
        assert!(q.empty());
    });
}
