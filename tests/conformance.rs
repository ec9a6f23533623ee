//! Conformance tests for shardloop's event loop: API.md sections 1 (the loop),
//! 2 (current loop per thread), 3 (crossing threads) and 6 (errors).
//!
//! The cases follow CPython's own suite (Lib/test/test_asyncio/test_base_events.py,
//! test_events.py, test_tasks.py `RunCoroutineThreadsafeTests`) and uvloop's
//! tests/test_base.py, rewritten for the Rust API.
//!
//! Ground rules:
//! - No test asserts an upper bound on time (the CI box is small and noisy). "Never early"
//!   is asserted as `fired_at >= deadline`.
//! - Orders that depend on deadlines are derived from the `TimerHandle::when()` values
//!   (or from `call_at` with a shared instant), never from how fast the test schedules.
//! - Every libtest test runs on a worker thread, so loops are created explicitly.
//! - Every body runs under `guarded`, which fails the test (instead of hanging the whole
//!   suite) when a loop never returns because a stop, wakeup or callback was lost.
//! - Nothing is asserted inside loop callbacks: a panic there goes to the loop's exception
//!   handler. Callbacks record what they see; the test asserts after the loop returns.

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use shardloop::{
    yield_now, Error, EventLoop, ExceptionContext, Handle, LoopHandle, Remote, Task, TimerHandle,
};

/// How long a test may run before it is declared hung. Generous on purpose: this is a
/// hang detector, not a timing assertion.
const HANG_LIMIT: Duration = Duration::from_secs(60);
/// How long to wait for something that must happen "eventually" on another thread.
const EVENTUALLY: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------

/// Runs `f` on its own thread (named like the test) and fails, rather than hangs, if it
/// has not finished within `HANG_LIMIT`.
fn guarded<F: FnOnce() + Send + 'static>(f: F) {
    let name = thread::current()
        .name()
        .unwrap_or("conformance")
        .to_string();
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name(name)
        .spawn(move || {
            let r = catch_unwind(AssertUnwindSafe(f));
            let _ = tx.send(r);
        })
        .expect("spawn the test thread");
    match rx.recv_timeout(HANG_LIMIT) {
        Ok(Ok(())) => {}
        Ok(Err(payload)) => resume_unwind(payload),
        Err(_) => panic!(
            "test did not finish within {HANG_LIMIT:?}: the loop hung \
             (a stop, a wakeup or a callback was lost)"
        ),
    }
}

/// `expect_err!(expr, pattern)`: `expr` is `Err(pattern)`; prints what it got otherwise.
/// Works for `Result<T, Error>` whatever `T` is (no `Debug` needed on `T`).
macro_rules! expect_err {
    ($expr:expr, $pat:pat) => {
        match $expr {
            Err($pat) => {}
            Err(other) => panic!(
                "`{}`: expected Err({}), got Err({:?}) (\"{}\")",
                stringify!($expr),
                stringify!($pat),
                other,
                other
            ),
            Ok(_) => panic!(
                "`{}`: expected Err({}), got Ok(..)",
                stringify!($expr),
                stringify!($pat)
            ),
        }
    };
}

type Log<T> = Rc<RefCell<Vec<T>>>;

fn new_log<T>() -> Log<T> {
    Rc::new(RefCell::new(Vec::new()))
}

fn pusher<T: 'static>(log: &Log<T>, v: T) -> impl FnOnce() + 'static {
    let log = Rc::clone(log);
    move || log.borrow_mut().push(v)
}

fn items<T: Clone>(log: &Log<T>) -> Vec<T> {
    log.borrow().clone()
}

fn stopper(lp: &EventLoop) -> impl FnOnce() + 'static {
    let lp = lp.clone();
    move || lp.stop()
}

fn new_loop() -> EventLoop {
    shardloop::new_event_loop().expect("new_event_loop()")
}

/// asyncio's `loop._run_once()` from the outside: `stop()` then `run_forever()` runs
/// exactly one iteration.
fn run_one_iteration(lp: &EventLoop) {
    lp.stop();
    lp.run_forever()
        .expect("run_forever() after stop() must run one iteration and return Ok");
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Drops a `Task` on purpose: API.md says dropping a `Task` detaches it.
fn detach<T>(task: Task<T>) {
    let _detached = task;
}

fn boom(msg: &str) -> u32 {
    panic!("{msg}")
}

/// Sets its flag when dropped: observes that a callback / future was destroyed.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn drop_flag() -> (DropFlag, Arc<AtomicBool>) {
    let flag = Arc::new(AtomicBool::new(false));
    (DropFlag(Arc::clone(&flag)), flag)
}

fn is_set(flag: &AtomicBool) -> bool {
    flag.load(Ordering::SeqCst)
}

/// Polls `cond` until it holds, failing with `what` after `EVENTUALLY`.
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < EVENTUALLY, "never happened: {what}");
        thread::sleep(ms(1));
    }
}

/// A loop running `run_forever()` on its own thread (set as that thread's loop).
struct LoopThread {
    handle: LoopHandle,
    thread: thread::ThreadId,
    done: mpsc::Receiver<()>,
    join: Option<thread::JoinHandle<()>>,
}

impl LoopThread {
    fn spawn(name: &str) -> LoopThread {
        let (handle_tx, handle_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel();
        let join = thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let lp = new_loop();
                shardloop::set_event_loop(Some(lp.clone()));
                handle_tx.send(lp.handle()).unwrap();
                lp.run_forever().expect("run_forever() on the loop thread");
                lp.close().expect("close() on the loop thread");
                shardloop::set_event_loop(None);
                let _ = done_tx.send(());
            })
            .expect("spawn a loop thread");
        let handle = handle_rx
            .recv_timeout(EVENTUALLY)
            .expect("the loop thread did not start");
        LoopThread {
            handle,
            thread: join.thread().id(),
            done: done_rx,
            join: Some(join),
        }
    }

    /// Waits for `run_forever()` on the loop thread to return; `what` explains a hang.
    fn wait_stopped(mut self, what: &str) {
        let join = self.join.take().unwrap();
        match self.done.recv_timeout(EVENTUALLY) {
            Ok(()) => join.join().unwrap(),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                if let Err(p) = join.join() {
                    resume_unwind(p)
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}"),
        }
    }

    fn shutdown(self) {
        self.handle.stop();
        self.wait_stopped("LoopHandle::stop() did not stop the loop thread");
    }
}

// ---------------------------------------------------------------------------------------
// 1. scheduling order
// ---------------------------------------------------------------------------------------

#[test]
fn call_soon_runs_callbacks_in_fifo_order() {
    guarded(|| {
        let lp = new_loop();
        let log = new_log();
        for i in 0..200 {
            let _h: Handle = lp.call_soon(pusher(&log, i)).unwrap();
        }
        lp.call_soon(stopper(&lp)).unwrap();
        lp.run_forever().unwrap();
        assert_eq!(items(&log), (0..200).collect::<Vec<_>>());
        lp.close().unwrap();
    });
}

#[test]
fn call_later_runs_timers_in_deadline_order() {
    guarded(|| {
        let lp = new_loop();
        let log = new_log();
        let delays = [30u64, 10, 20, 1, 0, 25, 5];
        let mut whens = Vec::new();
        for (i, d) in delays.iter().enumerate() {
            let before = lp.time();
            let t: TimerHandle = lp.call_later(ms(*d), pusher(&log, i)).unwrap();
            let after = lp.time();
            // call_later(d) == call_at(time() + d)
            assert!(
                t.when() >= before + ms(*d) && t.when() <= after + ms(*d),
                "call_later({d} ms).when() is not time() + {d} ms"
            );
            whens.push((t.when(), i));
        }
        let last = whens.iter().map(|w| w.0).max().unwrap();
        lp.call_at(last + ms(1), stopper(&lp)).unwrap();
        lp.run_forever().unwrap();
        // Expected order: by deadline, ties in scheduling order.
        whens.sort();
        let expected: Vec<usize> = whens.iter().map(|w| w.1).collect();
        assert_eq!(items(&log), expected);
        lp.close().unwrap();
    });
}

#[test]
fn zero_and_past_deadlines_run_on_the_next_iteration() {
    guarded(|| {
        let lp = new_loop();
        let log = new_log();
        let past = lp
            .time()
            .checked_sub(Duration::from_secs(1))
            .expect("monotonic clock older than 1 s");
        lp.call_later(Duration::ZERO, pusher(&log, "zero")).unwrap();
        lp.call_at(past, pusher(&log, "past")).unwrap();
        lp.call_soon(pusher(&log, "soon")).unwrap();
        run_one_iteration(&lp);
        // One iteration: the ready snapshot, then the due timers in deadline order.
        assert_eq!(items(&log), vec!["soon", "past", "zero"]);
        lp.close().unwrap();
    });
}

#[test]
fn timers_never_fire_before_their_deadline() {
    guarded(|| {
        let lp = new_loop();
        let fired: Log<(Instant, Instant)> = new_log();
        let mut expected = 0;
        for d in [0u64, 1, 2, 3, 5, 8, 13, 21] {
            // call_at
            let when = lp.time() + ms(d);
            let f = Rc::clone(&fired);
            lp.call_at(when, move || f.borrow_mut().push((when, Instant::now())))
                .unwrap();
            // call_later: the deadline is whatever when() says
            let slot: Rc<Cell<Option<Instant>>> = Rc::new(Cell::new(None));
            let (f, s) = (Rc::clone(&fired), Rc::clone(&slot));
            let t = lp
                .call_later(ms(d), move || {
                    f.borrow_mut().push((s.get().unwrap(), Instant::now()))
                })
                .unwrap();
            slot.set(Some(t.when()));
            expected += 2;
        }
        // Scheduled last with the largest delay, so its deadline is after all others.
        lp.call_later(ms(30), stopper(&lp)).unwrap();
        lp.run_forever().unwrap();
        let fired = items(&fired);
        assert_eq!(fired.len(), expected, "every timer fires");
        for (deadline, at) in fired {
            assert!(
                at >= deadline,
                "timer fired {:?} before its deadline",
                deadline - at
            );
        }
        lp.close().unwrap();
    });
}

#[test]
fn equal_deadlines_run_in_scheduling_order() {
    guarded(|| {
        let lp = new_loop();
        let log = new_log();
        let when = lp.time() + ms(5);
        for i in 0..64 {
            lp.call_at(when, pusher(&log, i)).unwrap();
        }
        // Same deadline, scheduled last: runs last if ties keep scheduling order.
        lp.call_at(when, stopper(&lp)).unwrap();
        lp.run_forever().unwrap();
        assert_eq!(items(&log), (0..64).collect::<Vec<_>>());
        lp.close().unwrap();
    });
}

// ---------------------------------------------------------------------------------------
// 1. iterations and stop()
// ---------------------------------------------------------------------------------------

#[test]
fn stop_before_run_forever_runs_exactly_one_iteration() {
    guarded(|| {
        let lp = new_loop();
        // Nothing scheduled: returns instead of blocking.
        lp.stop();
        lp.run_forever().unwrap();
        assert!(!lp.is_running());

        let log = new_log();
        let (lp2, log2) = (lp.clone(), Rc::clone(&log));
        lp.call_soon(move || {
            log2.borrow_mut().push("first");
            lp2.call_soon(pusher(&log2, "second")).unwrap();
        })
        .unwrap();
        lp.stop();
        lp.run_forever().unwrap();
        assert_eq!(items(&log), vec!["first"], "only one iteration ran");

        run_one_iteration(&lp);
        assert_eq!(items(&log), vec!["first", "second"]);
        lp.close().unwrap();
    });
}

#[test]
fn stop_request_is_consumed_when_run_forever_returns() {
    guarded(|| {
        let lp = new_loop();
        run_one_iteration(&lp);
        // The stop above must not make the next run_forever() return early: it has to
        // run until the timer below fires and the stop scheduled after it runs.
        let log = new_log();
        let t = lp.call_later(ms(10), pusher(&log, "timer")).unwrap();
        lp.call_at(t.when() + ms(1), stopper(&lp)).unwrap();
        lp.run_forever().unwrap();
        assert_eq!(items(&log), vec!["timer"]);
        lp.close().unwrap();
    });
}

#[test]
fn stop_inside_a_callback_lets_the_snapshot_finish() {
    guarded(|| {
        let lp = new_loop();
        let log = new_log();
        lp.call_soon(pusher(&log, 1)).unwrap();
        let (lp2, log2) = (lp.clone(), Rc::clone(&log));
        lp.call_soon(move || {
            lp2.stop();
            log2.borrow_mut().push(2);
            lp2.call_soon(pusher(&log2, 4)).unwrap();
        })
        .unwrap();
        lp.call_soon(pusher(&log, 3)).unwrap();
        lp.run_forever().unwrap();
        assert_eq!(
            items(&log),
            vec![1, 2, 3],
            "the rest of the snapshot ran, nothing more"
        );
        run_one_iteration(&lp);
        assert_eq!(items(&log), vec![1, 2, 3, 4]);
        lp.close().unwrap();
    });
}

#[test]
fn work_scheduled_during_an_iteration_waits_for_the_next_one() {
    guarded(|| {
        let lp = new_loop();
        let log: Log<&'static str> = new_log();
        let past = lp
            .time()
            .checked_sub(Duration::from_secs(1))
            .expect("monotonic clock older than 1 s");

        // A ready callback schedules a callback and two already-due timers.
        let (lp2, log2) = (lp.clone(), Rc::clone(&log));
        lp.call_soon(move || {
            log2.borrow_mut().push("a");
            lp2.call_soon(pusher(&log2, "a-soon")).unwrap();
            lp2.call_later(Duration::ZERO, pusher(&log2, "a-zero-timer"))
                .unwrap();
            lp2.call_at(past, pusher(&log2, "a-past-timer")).unwrap();
        })
        .unwrap();
        lp.call_soon(pusher(&log, "b")).unwrap();
        // A due timer schedules another due timer and a callback.
        let (lp3, log3) = (lp.clone(), Rc::clone(&log));
        lp.call_at(past, move || {
            log3.borrow_mut().push("t");
            lp3.call_later(Duration::ZERO, pusher(&log3, "t-zero-timer"))
                .unwrap();
            lp3.call_soon(pusher(&log3, "t-soon")).unwrap();
        })
        .unwrap();

        run_one_iteration(&lp);
        assert_eq!(
            items(&log),
            vec!["a", "b", "t"],
            "work scheduled by an iteration's callbacks must wait for the next iteration"
        );

        run_one_iteration(&lp);
        let mut second = items(&log)[3..].to_vec();
        second.sort();
        assert_eq!(
            second,
            vec![
                "a-past-timer",
                "a-soon",
                "a-zero-timer",
                "t-soon",
                "t-zero-timer"
            ],
            "everything deferred runs on the next iteration"
        );
        lp.close().unwrap();
    });
}

#[test]
fn is_running_reflects_the_loop_state() {
    guarded(|| {
        let lp = new_loop();
        assert!(!lp.is_running());
        let seen = Rc::new(Cell::new(false));
        let (lp2, s) = (lp.clone(), Rc::clone(&seen));
        lp.call_soon(move || s.set(lp2.is_running())).unwrap();
        run_one_iteration(&lp);
        assert!(seen.get(), "is_running() inside a callback");
        assert!(
            !lp.is_running(),
            "is_running() after run_forever() returned"
        );
        assert!(lp.run_until_complete(async { lp.is_running() }).unwrap());
        assert!(!lp.is_running());
        lp.close().unwrap();
    });
}

// ---------------------------------------------------------------------------------------
// 1. run_until_complete
// ---------------------------------------------------------------------------------------

#[test]
fn run_until_complete_returns_the_value() {
    guarded(|| {
        let lp = new_loop();
        // A borrowing (non-'static) future.
        let base = 40u32;
        assert_eq!(lp.run_until_complete(async { base + 2 }).unwrap(), 42);
        // A task: outer Result from the loop, inner from the task.
        let task: Task<u32> = lp
            .create_task(async {
                yield_now().await;
                7
            })
            .unwrap();
        let r: Result<u32, Error> = lp.run_until_complete(task).unwrap();
        assert_eq!(r.unwrap(), 7);
        // !Send futures are fine.
        let rc = Rc::new(5u32);
        let t = lp
            .create_task(async move {
                yield_now().await;
                *rc
            })
            .unwrap();
        assert_eq!(lp.run_until_complete(t).unwrap().unwrap(), 5);
        assert!(!lp.is_running());
        lp.close().unwrap();
    });
}

#[test]
fn reentering_a_running_loop_is_already_running() {
    guarded(|| {
        let lp = new_loop();
        let (nested, forever) = lp
            .run_until_complete(async { (lp.run_until_complete(async { 1 }), lp.run_forever()) })
            .unwrap();
        expect_err!(nested, Error::AlreadyRunning);
        expect_err!(forever, Error::AlreadyRunning);

        // Same from a plain callback under run_forever().
        let got: Rc<RefCell<Option<Result<(), Error>>>> = Rc::new(RefCell::new(None));
        let (lp2, g) = (lp.clone(), Rc::clone(&got));
        lp.call_soon(move || {
            *g.borrow_mut() = Some(lp2.run_forever());
            lp2.stop();
        })
        .unwrap();
        lp.run_forever().unwrap();
        expect_err!(
            got.borrow_mut().take().expect("callback ran"),
            Error::AlreadyRunning
        );

        // The loop is still usable.
        assert_eq!(lp.run_until_complete(async { 2 }).unwrap(), 2);
        lp.close().unwrap();
    });
}

#[test]
fn run_until_complete_stopped_first_is_stopped_before_complete() {
    guarded(|| {
        let lp = new_loop();
        // stop() from a callback
        lp.call_soon(stopper(&lp)).unwrap();
        expect_err!(
            lp.run_until_complete(std::future::pending::<()>()),
            Error::StoppedBeforeComplete
        );
        assert!(!lp.is_running());
        // stop() before the call
        lp.stop();
        expect_err!(
            lp.run_until_complete(std::future::pending::<()>()),
            Error::StoppedBeforeComplete
        );
        // stop() from inside the future itself
        expect_err!(
            lp.run_until_complete(async {
                lp.stop();
                std::future::pending::<()>().await
            }),
            Error::StoppedBeforeComplete
        );
        // The loop is still usable.
        assert_eq!(lp.run_until_complete(async { 3 }).unwrap(), 3);
        lp.close().unwrap();
    });
}

#[test]
fn running_a_loop_while_another_runs_is_another_loop_running() {
    guarded(|| {
        let a = new_loop();
        let b = new_loop();
        let (r1, r2) = a
            .run_until_complete(async { (b.run_until_complete(async { 1 }), b.run_forever()) })
            .unwrap();
        expect_err!(r1, Error::AnotherLoopRunning);
        expect_err!(r2, Error::AnotherLoopRunning);
        assert!(!b.is_running());
        // Once `a` returned, `b` runs fine on this thread.
        assert_eq!(b.run_until_complete(async { 4 }).unwrap(), 4);
        a.close().unwrap();
        b.close().unwrap();
    });
}

// ---------------------------------------------------------------------------------------
// 1. close()
// ---------------------------------------------------------------------------------------

#[test]
fn close_while_running_is_close_while_running() {
    guarded(|| {
        let lp = new_loop();
        let r = lp.run_until_complete(async { lp.close() }).unwrap();
        expect_err!(r, Error::CloseWhileRunning);
        assert!(!lp.is_closed());

        let got: Rc<RefCell<Option<Result<(), Error>>>> = Rc::new(RefCell::new(None));
        let (lp2, g) = (lp.clone(), Rc::clone(&got));
        lp.call_soon(move || *g.borrow_mut() = Some(lp2.close()))
            .unwrap();
        run_one_iteration(&lp);
        expect_err!(
            got.borrow_mut().take().expect("callback ran"),
            Error::CloseWhileRunning
        );
        assert!(!lp.is_closed());

        lp.close().unwrap();
        assert!(lp.is_closed());
    });
}

#[test]
fn close_twice_is_a_no_op() {
    guarded(|| {
        let lp = new_loop();
        lp.close().unwrap();
        lp.close().unwrap();
        assert!(lp.is_closed());
        assert!(!lp.is_running());
    });
}

#[test]
fn after_close_every_scheduling_and_run_call_is_closed() {
    guarded(|| {
        let lp = new_loop();
        let handle = lp.handle();
        assert!(!lp.is_closed());
        assert!(!handle.is_closed());
        let t0 = lp.time();
        lp.close().unwrap();

        assert!(lp.is_closed());
        assert!(!lp.is_running());
        assert!(handle.is_closed());
        assert!(lp.time() >= t0, "time() still works and is monotonic");

        let (g, dropped) = drop_flag();
        expect_err!(
            lp.call_soon(move || {
                let _g = &g;
            }),
            Error::Closed
        );
        assert!(
            is_set(&dropped),
            "a refused callback is dropped, not leaked"
        );
        expect_err!(lp.call_later(ms(1), || ()), Error::Closed);
        expect_err!(lp.call_later(Duration::ZERO, || ()), Error::Closed);
        expect_err!(lp.call_at(lp.time(), || ()), Error::Closed);
        expect_err!(lp.create_task(async { 1 }), Error::Closed);
        expect_err!(lp.run_forever(), Error::Closed);
        expect_err!(lp.run_until_complete(async { 1 }), Error::Closed);
        expect_err!(handle.call_soon_threadsafe(|| ()), Error::Closed);
        // A clone is the same (closed) loop.
        let clone = lp.clone();
        assert!(clone.is_closed());
        expect_err!(clone.call_soon(|| ()), Error::Closed);
    });
}

#[test]
fn pending_callbacks_are_dropped_at_close() {
    guarded(|| {
        let lp = new_loop();
        let ran = Rc::new(Cell::new(false));
        let (g1, soon_dropped) = drop_flag();
        let (g2, timer_dropped) = drop_flag();
        let (g3, due_timer_dropped) = drop_flag();
        let r = Rc::clone(&ran);
        lp.call_soon(move || {
            let _g = &g1;
            r.set(true);
        })
        .unwrap();
        let r = Rc::clone(&ran);
        lp.call_later(Duration::from_secs(3600), move || {
            let _g = &g2;
            r.set(true);
        })
        .unwrap();
        let r = Rc::clone(&ran);
        lp.call_later(Duration::ZERO, move || {
            let _g = &g3;
            r.set(true);
        })
        .unwrap();
        assert!(!is_set(&soon_dropped));
        lp.close().unwrap();
        assert!(
            is_set(&soon_dropped),
            "pending call_soon callback dropped at close"
        );
        assert!(is_set(&timer_dropped), "pending timer dropped at close");
        assert!(is_set(&due_timer_dropped), "due timer dropped at close");
        assert!(!ran.get(), "close() runs nothing");
    });
}

#[test]
fn pending_threadsafe_callbacks_are_dropped_at_close() {
    guarded(|| {
        let lp = new_loop();
        let handle = lp.handle();
        let ran = Arc::new(AtomicBool::new(false));
        let (g, dropped) = drop_flag();
        let r = Arc::clone(&ran);
        let h = handle.clone();
        thread::spawn(move || {
            h.call_soon_threadsafe(move || {
                let _g = &g;
                r.store(true, Ordering::SeqCst);
            })
        })
        .join()
        .unwrap()
        .expect("call_soon_threadsafe to an open loop");
        lp.close().unwrap();
        assert!(
            is_set(&dropped),
            "an accepted threadsafe callback still pending at close is dropped by close()"
        );
        assert!(!is_set(&ran));
    });
}

// ---------------------------------------------------------------------------------------
// 1. handles
// ---------------------------------------------------------------------------------------

#[test]
fn cancelled_handles_never_run_and_are_dropped_at_once() {
    guarded(|| {
        let lp = new_loop();
        let ran = Rc::new(Cell::new(0));

        let (g, soon_dropped) = drop_flag();
        let r = Rc::clone(&ran);
        let h = lp
            .call_soon(move || {
                let _g = &g;
                r.set(r.get() + 1);
            })
            .unwrap();
        assert!(!h.cancelled());
        h.cancel();
        assert!(h.cancelled());
        assert!(
            is_set(&soon_dropped),
            "Handle::cancel() drops the callback at once"
        );
        h.cancel();
        assert!(h.cancelled(), "cancel() is idempotent");

        let (g, timer_dropped) = drop_flag();
        let r = Rc::clone(&ran);
        let t = lp
            .call_later(Duration::from_secs(3600), move || {
                let _g = &g;
                r.set(r.get() + 1);
            })
            .unwrap();
        assert!(!t.cancelled());
        t.cancel();
        assert!(t.cancelled());
        assert!(
            is_set(&timer_dropped),
            "TimerHandle::cancel() drops the callback at once"
        );
        t.cancel();
        assert!(t.cancelled());

        let (g, due_dropped) = drop_flag();
        let r = Rc::clone(&ran);
        let due = lp
            .call_later(Duration::ZERO, move || {
                let _g = &g;
                r.set(r.get() + 1);
            })
            .unwrap();
        due.cancel();
        assert!(is_set(&due_dropped));

        run_one_iteration(&lp);
        run_one_iteration(&lp);
        assert_eq!(ran.get(), 0, "cancelled callbacks never run");
        lp.close().unwrap();
    });
}

#[test]
fn cancel_from_an_earlier_callback_of_the_same_iteration_prevents_the_run() {
    guarded(|| {
        let lp = new_loop();
        let log = new_log();
        let slot: Rc<RefCell<Option<Handle>>> = Rc::new(RefCell::new(None));
        let tslot: Rc<RefCell<Option<TimerHandle>>> = Rc::new(RefCell::new(None));
        let (s, ts) = (Rc::clone(&slot), Rc::clone(&tslot));
        lp.call_soon(move || {
            s.borrow().as_ref().unwrap().cancel();
            ts.borrow().as_ref().unwrap().cancel();
        })
        .unwrap();
        *slot.borrow_mut() = Some(lp.call_soon(pusher(&log, "cancelled-soon")).unwrap());
        *tslot.borrow_mut() = Some(
            lp.call_later(Duration::ZERO, pusher(&log, "cancelled-timer"))
                .unwrap(),
        );
        lp.call_soon(pusher(&log, "kept")).unwrap();
        run_one_iteration(&lp);
        run_one_iteration(&lp);
        assert_eq!(items(&log), vec!["kept"]);
        assert!(slot.borrow().as_ref().unwrap().cancelled());
        lp.close().unwrap();
    });
}

#[test]
fn timer_handle_when_is_stable_across_cancel_and_firing() {
    guarded(|| {
        let lp = new_loop();
        let before = lp.time();
        let t = lp.call_later(ms(10), || ()).unwrap();
        let after = lp.time();
        let w = t.when();
        assert!(w >= before + ms(10) && w <= after + ms(10));

        let at = lp.time() + ms(3);
        let fired = Rc::new(Cell::new(false));
        let f = Rc::clone(&fired);
        let t2 = lp.call_at(at, move || f.set(true)).unwrap();
        assert_eq!(t2.when(), at, "call_at keeps the exact instant");

        t.cancel();
        assert_eq!(t.when(), w, "when() after cancel()");

        lp.call_at(at + ms(1), stopper(&lp)).unwrap();
        lp.run_forever().unwrap();
        assert!(fired.get());
        assert_eq!(t2.when(), at, "when() after firing");
        assert!(!t2.cancelled());
        lp.close().unwrap();
    });
}

// ---------------------------------------------------------------------------------------
// 1. panics and the exception handler
// ---------------------------------------------------------------------------------------

#[test]
fn panics_in_callbacks_go_to_the_exception_handler_and_the_loop_keeps_running() {
    guarded(|| {
        let lp = new_loop();
        let seen: Log<(String, Option<String>)> = new_log();
        let s = Rc::clone(&seen);
        lp.set_exception_handler(move |ctx: &ExceptionContext| {
            s.borrow_mut()
                .push((ctx.message.clone(), ctx.panic.clone()))
        });
        let log = new_log();
        lp.call_soon(|| panic!("boom-in-callback-{}", 1)).unwrap();
        lp.call_soon(pusher(&log, "after-callback-panic")).unwrap();
        lp.call_later(Duration::ZERO, || panic!("boom-in-timer"))
            .unwrap();
        let t = lp
            .call_later(ms(2), pusher(&log, "after-timer-panic"))
            .unwrap();
        lp.call_at(t.when() + ms(1), stopper(&lp)).unwrap();

        lp.run_forever()
            .expect("run_forever() returns Ok after callbacks panicked");
        assert_eq!(
            items(&log),
            vec!["after-callback-panic", "after-timer-panic"]
        );
        let seen = items(&seen);
        assert_eq!(seen.len(), 2, "one report per panic: {seen:?}");
        assert!(
            seen[0]
                .1
                .as_deref()
                .unwrap_or("")
                .contains("boom-in-callback-1"),
            "ctx.panic carries the panic message: {seen:?}"
        );
        assert!(
            seen[1].1.as_deref().unwrap_or("").contains("boom-in-timer"),
            "ctx.panic carries the panic message: {seen:?}"
        );
        assert!(!seen[0].0.is_empty(), "ctx.message is set");
        assert!(!lp.is_running());
        assert_eq!(lp.run_until_complete(async { 1 }).unwrap(), 1);
        lp.close().unwrap();
    });
}

#[test]
fn default_and_cleared_exception_handler_keep_the_loop_running() {
    guarded(|| {
        let lp = new_loop();
        let log = new_log();
        // Default handler (logs).
        lp.call_soon(|| panic!("boom-default-handler")).unwrap();
        lp.call_soon(pusher(&log, 1)).unwrap();
        run_one_iteration(&lp);
        assert_eq!(items(&log), vec![1]);

        // A custom handler, then cleared: the custom one is no longer called.
        let calls = Rc::new(Cell::new(0));
        let c = Rc::clone(&calls);
        lp.set_exception_handler(move |_ctx: &ExceptionContext| c.set(c.get() + 1));
        lp.call_soon(|| panic!("boom-custom-handler")).unwrap();
        run_one_iteration(&lp);
        assert_eq!(calls.get(), 1);
        lp.clear_exception_handler();
        lp.call_soon(|| panic!("boom-after-clear")).unwrap();
        lp.call_soon(pusher(&log, 2)).unwrap();
        run_one_iteration(&lp);
        assert_eq!(calls.get(), 1, "cleared handler is not called");
        assert_eq!(items(&log), vec![1, 2]);
        lp.close().unwrap();
    });
}

// ---------------------------------------------------------------------------------------
// 1. tasks
// ---------------------------------------------------------------------------------------

#[test]
fn task_cancel_resolves_cancelled_and_drops_the_future() {
    guarded(|| {
        let lp = new_loop();
        let (g, dropped) = drop_flag();
        let started = Rc::new(Cell::new(false));
        let reached_end = Rc::new(Cell::new(false));
        let (s, e) = (Rc::clone(&started), Rc::clone(&reached_end));
        let task = lp
            .create_task(async move {
                let _g = g;
                s.set(true);
                std::future::pending::<()>().await;
                e.set(true);
            })
            .unwrap();
        run_one_iteration(&lp);
        assert!(started.get(), "the task started on the first iteration");
        assert!(!task.is_finished());
        task.cancel();
        let r = lp.run_until_complete(task).unwrap();
        expect_err!(r, Error::Cancelled);
        assert!(is_set(&dropped), "the cancelled task's future was dropped");
        assert!(!reached_end.get());
        lp.close().unwrap();
    });
}

#[test]
fn task_cancelled_before_its_first_poll_never_runs() {
    guarded(|| {
        let lp = new_loop();
        let (g, dropped) = drop_flag();
        let polled = Rc::new(Cell::new(false));
        let p = Rc::clone(&polled);
        let task = lp
            .create_task(async move {
                let _g = g;
                p.set(true);
                1u32
            })
            .unwrap();
        task.cancel();
        let r = lp.run_until_complete(task).unwrap();
        expect_err!(r, Error::Cancelled);
        assert!(
            !polled.get(),
            "a task cancelled before it started is never polled"
        );
        assert!(is_set(&dropped));
        lp.close().unwrap();
    });
}

#[test]
fn task_cancelled_by_another_task() {
    guarded(|| {
        let lp = new_loop();
        let victim = lp.create_task(std::future::pending::<u32>()).unwrap();
        let killer = lp
            .create_task(async move {
                yield_now().await;
                victim.cancel();
                victim.await
            })
            .unwrap();
        let r = lp.run_until_complete(killer).unwrap().unwrap();
        expect_err!(r, Error::Cancelled);
        lp.close().unwrap();
    });
}

#[test]
fn cancel_after_completion_keeps_the_result() {
    guarded(|| {
        let lp = new_loop();
        let t = lp.create_task(async { 5u32 }).unwrap();
        assert!(!t.is_finished());
        run_one_iteration(&lp);
        assert!(
            t.is_finished(),
            "a ready task finishes on the first iteration"
        );
        t.cancel();
        assert_eq!(lp.run_until_complete(t).unwrap().unwrap(), 5);
        lp.close().unwrap();
    });
}

#[test]
fn task_panic_resolves_panicked_with_the_message() {
    guarded(|| {
        let lp = new_loop();
        let task = lp
            .create_task(async {
                yield_now().await;
                boom("task-boom-7")
            })
            .unwrap();
        match lp.run_until_complete(task).unwrap() {
            Err(Error::Panicked(msg)) => {
                assert!(msg.contains("task-boom-7"), "Panicked({msg:?})")
            }
            Err(other) => panic!("expected Panicked, got {other:?}"),
            Ok(v) => panic!("expected Panicked, got Ok({v})"),
        }
        // A formatted (String) panic payload too.
        let n = 8;
        let task = lp
            .create_task(async move { boom(&format!("task-boom-{n}")) })
            .unwrap();
        match lp.run_until_complete(task).unwrap() {
            Err(Error::Panicked(msg)) => assert!(msg.contains("task-boom-8"), "{msg:?}"),
            Err(other) => panic!("expected Panicked, got {other:?}"),
            Ok(v) => panic!("expected Panicked, got Ok({v})"),
        }
        // The loop keeps working.
        assert_eq!(lp.run_until_complete(async { 9 }).unwrap(), 9);
        lp.close().unwrap();
    });
}

#[test]
fn a_detached_task_panic_goes_to_the_exception_handler() {
    guarded(|| {
        let lp = new_loop();
        let seen: Log<Option<String>> = new_log();
        let s = Rc::clone(&seen);
        lp.set_exception_handler(move |ctx: &ExceptionContext| {
            s.borrow_mut().push(ctx.panic.clone())
        });
        detach(
            lp.create_task(async {
                yield_now().await;
                boom("detached-task-boom")
            })
            .unwrap(),
        );
        lp.run_until_complete(async {
            for _ in 0..100 {
                if !seen.borrow().is_empty() {
                    break;
                }
                yield_now().await;
            }
        })
        .unwrap();
        let seen = items(&seen);
        assert!(
            seen.iter().any(|p| p
                .as_deref()
                .is_some_and(|m| m.contains("detached-task-boom"))),
            "the task panic reached the exception handler: {seen:?}"
        );
        lp.close().unwrap();
    });
}

#[test]
fn a_task_can_await_another_task() {
    guarded(|| {
        let lp = new_loop();
        let inner = lp
            .create_task(async {
                shardloop::time::sleep(ms(5)).await;
                21u32
            })
            .unwrap();
        let outer = lp
            .create_task(async move { inner.await.map(|v| v * 2) })
            .unwrap();
        assert_eq!(lp.run_until_complete(outer).unwrap().unwrap().unwrap(), 42);

        // The awaiting task sees the inner task's panic as Panicked.
        let inner = lp
            .create_task(async {
                yield_now().await;
                boom("inner-boom")
            })
            .unwrap();
        let outer = lp
            .create_task(async move {
                yield_now().await;
                inner.await
            })
            .unwrap();
        match lp.run_until_complete(outer).unwrap().unwrap() {
            Err(Error::Panicked(msg)) => assert!(msg.contains("inner-boom"), "{msg:?}"),
            Err(other) => panic!("expected Panicked, got {other:?}"),
            Ok(v) => panic!("expected Panicked, got Ok({v})"),
        }
        lp.close().unwrap();
    });
}

#[test]
fn dropping_a_task_detaches_it() {
    guarded(|| {
        let lp = new_loop();
        let done = Rc::new(Cell::new(false));
        let d = Rc::clone(&done);
        detach(
            lp.create_task(async move {
                yield_now().await;
                yield_now().await;
                d.set(true);
            })
            .unwrap(),
        );
        // Terminates only if the detached task keeps running to completion.
        lp.run_until_complete(async {
            while !done.get() {
                yield_now().await;
            }
        })
        .unwrap();
        assert!(done.get());
        lp.close().unwrap();
    });
}

// ---------------------------------------------------------------------------------------
// 3. crossing threads: call_soon_threadsafe and stop
// ---------------------------------------------------------------------------------------

#[test]
fn threadsafe_and_plain_calls_share_one_fifo_on_the_loop_thread() {
    guarded(|| {
        let lp = new_loop();
        let handle = lp.handle();
        let log = Arc::new(Mutex::new(Vec::new()));
        let push = |v: u32| {
            let log = Arc::clone(&log);
            move || log.lock().unwrap().push(v)
        };
        // Before the loop runs.
        for i in 0..20 {
            if i % 2 == 0 {
                lp.call_soon(push(i)).unwrap();
            } else {
                handle.call_soon_threadsafe(push(i)).unwrap();
            }
        }
        lp.call_soon(stopper(&lp)).unwrap();
        lp.run_forever().unwrap();
        assert_eq!(*log.lock().unwrap(), (0..20).collect::<Vec<_>>());

        // From inside a running callback.
        let (lp2, h2) = (lp.clone(), handle.clone());
        let pushes: Vec<_> = (100..120).map(push).collect();
        lp.call_soon(move || {
            for (i, p) in pushes.into_iter().enumerate() {
                if i % 2 == 0 {
                    lp2.call_soon(p).unwrap();
                } else {
                    h2.call_soon_threadsafe(p).unwrap();
                }
            }
            lp2.call_soon(stopper(&lp2)).unwrap();
        })
        .unwrap();
        lp.run_forever().unwrap();
        assert_eq!(
            log.lock().unwrap()[20..].to_vec(),
            (100..120).collect::<Vec<_>>()
        );
        lp.close().unwrap();
    });
}

#[test]
fn threadsafe_calls_from_four_threads_mixed_with_timers_all_run() {
    guarded(|| {
        const THREADS: usize = 4;
        const PER_THREAD: usize = 1024;
        const TIMERS: usize = 128;
        const TOTAL: usize = THREADS * PER_THREAD + TIMERS;

        let lp = new_loop();
        let handle = lp.handle();
        let count = Arc::new(AtomicUsize::new(0));
        let order: Arc<Mutex<Vec<Vec<usize>>>> = Arc::new(Mutex::new(vec![Vec::new(); THREADS]));
        let bump = {
            let count = Arc::clone(&count);
            let handle = handle.clone();
            move || {
                if count.fetch_add(1, Ordering::SeqCst) + 1 == TOTAL {
                    handle.stop();
                }
            }
        };
        for i in 0..TIMERS {
            let bump = bump.clone();
            lp.call_later(ms((i % 16) as u64), bump).unwrap();
        }
        // Hang guard only: stops the loop if callbacks were lost (then the count is off).
        lp.call_later(Duration::from_secs(50), stopper(&lp))
            .unwrap();

        let barrier = Arc::new(Barrier::new(THREADS));
        let senders: Vec<_> = (0..THREADS)
            .map(|t| {
                let (handle, barrier, order, bump) = (
                    handle.clone(),
                    Arc::clone(&barrier),
                    Arc::clone(&order),
                    bump.clone(),
                );
                thread::spawn(move || {
                    barrier.wait();
                    for seq in 0..PER_THREAD {
                        let (order, bump) = (Arc::clone(&order), bump.clone());
                        handle
                            .call_soon_threadsafe(move || {
                                order.lock().unwrap()[t].push(seq);
                                bump();
                            })
                            .expect("call_soon_threadsafe to a running loop");
                    }
                })
            })
            .collect();
        lp.run_forever().unwrap();
        for s in senders {
            s.join().unwrap();
        }
        assert_eq!(
            count.load(Ordering::SeqCst),
            TOTAL,
            "every callback ran once"
        );
        for (t, seqs) in order.lock().unwrap().iter().enumerate() {
            assert_eq!(
                *seqs,
                (0..PER_THREAD).collect::<Vec<_>>(),
                "thread {t}'s callbacks ran once each, in its order"
            );
        }
        lp.close().unwrap();
    });
}

#[test]
fn threadsafe_call_to_a_closed_loop_is_closed() {
    guarded(|| {
        let lp = new_loop();
        let handle = lp.handle();
        lp.close().unwrap();
        let (g, dropped) = drop_flag();
        let r = thread::spawn(move || {
            handle.call_soon_threadsafe(move || {
                let _g = &g;
            })
        })
        .join()
        .unwrap();
        expect_err!(r, Error::Closed);
        assert!(is_set(&dropped), "the refused callback is dropped");
    });
}

#[test]
fn loop_handle_stop_from_another_thread_wakes_a_parked_loop() {
    guarded(|| {
        let lt = LoopThread::spawn("parked-loop");
        // Nothing is scheduled: the loop parks in its selector.
        thread::sleep(ms(100));
        lt.handle.stop();
        lt.wait_stopped("LoopHandle::stop() did not wake the parked loop");
    });
}

#[test]
fn call_soon_threadsafe_wakes_a_parked_loop() {
    guarded(|| {
        let lt = LoopThread::spawn("parked-loop");
        thread::sleep(ms(100));
        let (tx, rx) = mpsc::channel();
        let loop_thread = lt.thread;
        lt.handle
            .call_soon_threadsafe(move || tx.send(thread::current().id()).unwrap())
            .unwrap();
        let ran_on = rx
            .recv_timeout(EVENTUALLY)
            .expect("call_soon_threadsafe did not wake the parked loop");
        assert_eq!(
            ran_on, loop_thread,
            "the callback runs on the loop's thread"
        );
        lt.shutdown();
    });
}

#[test]
fn a_waker_fired_from_another_thread_wakes_a_parked_loop() {
    guarded(|| {
        let lp = new_loop();
        let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
        let sender = thread::spawn(move || {
            thread::sleep(ms(50));
            tx.send(41).unwrap();
        });
        let v = lp
            .run_until_complete(async { rx.await.unwrap() + 1 })
            .unwrap();
        assert_eq!(v, 42);
        sender.join().unwrap();
        lp.close().unwrap();
    });
}

// ---------------------------------------------------------------------------------------
// 3. crossing threads: submit / Remote
// ---------------------------------------------------------------------------------------

#[test]
fn submit_wait_runs_a_non_send_future_on_the_loop_thread() {
    guarded(|| {
        let lt = LoopThread::spawn("submit-loop");
        let r: Remote<(u64, thread::ThreadId, thread::ThreadId)> = lt.handle.submit(|| {
            let factory_thread = thread::current().id();
            async move {
                let rc = Rc::new(40u64); // !Send across the await
                yield_now().await;
                (*rc + 2, factory_thread, thread::current().id())
            }
        });
        let (v, factory_thread, poll_thread) = r.wait().unwrap();
        assert_eq!(v, 42);
        assert_eq!(
            factory_thread, lt.thread,
            "the factory runs on the loop thread"
        );
        assert_eq!(
            poll_thread, lt.thread,
            "the future is polled on the loop thread"
        );

        // Many submitters at once, every result comes back to its own caller.
        let workers: Vec<_> = (0..4u64)
            .map(|w| {
                let h = lt.handle.clone();
                thread::spawn(move || {
                    (0..50u64)
                        .map(|i| {
                            h.submit(move || async move { w * 1000 + i })
                                .wait()
                                .unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for (w, j) in workers.into_iter().enumerate() {
            let w = w as u64;
            assert_eq!(
                j.join().unwrap(),
                (0..50u64).map(|i| w * 1000 + i).collect::<Vec<_>>()
            );
        }
        lt.shutdown();
    });
}

#[test]
fn submit_wait_timeout_times_out_and_drops_the_work() {
    guarded(|| {
        let lt = LoopThread::spawn("submit-loop");
        let (g, dropped) = drop_flag();
        let completed = Arc::new(AtomicBool::new(false));
        let c = Arc::clone(&completed);
        let r = lt.handle.submit(move || async move {
            let _g = g;
            shardloop::time::sleep(Duration::from_secs(3600)).await;
            c.store(true, Ordering::SeqCst);
        });
        expect_err!(r.wait_timeout(ms(50)), Error::Timeout);
        eventually("the timed-out work's future is dropped on its loop", || {
            is_set(&dropped)
        });
        assert!(!is_set(&completed), "the timed-out work was cancelled");

        // Work that finishes in time is returned.
        let v = lt
            .handle
            .submit(|| async { 1u32 })
            .wait_timeout(Duration::from_secs(30))
            .unwrap();
        assert_eq!(v, 1);
        lt.shutdown();
    });
}

#[test]
fn remote_cancel_resolves_cancelled_and_drops_the_work() {
    guarded(|| {
        let lt = LoopThread::spawn("submit-loop");
        let (g, dropped) = drop_flag();
        let (started_tx, started_rx) = mpsc::channel();
        let r = lt.handle.submit(move || async move {
            let _g = g;
            started_tx.send(()).unwrap();
            std::future::pending::<u32>().await
        });
        started_rx
            .recv_timeout(EVENTUALLY)
            .expect("the submitted work started");
        r.cancel();
        expect_err!(r.wait(), Error::Cancelled);
        eventually("the cancelled work's future is dropped", || {
            is_set(&dropped)
        });
        lt.shutdown();
    });
}

#[test]
fn remote_panic_resolves_panicked() {
    guarded(|| {
        let lt = LoopThread::spawn("submit-loop");
        let r = lt.handle.submit(|| async {
            yield_now().await;
            boom("remote-boom")
        });
        match r.wait() {
            Err(Error::Panicked(msg)) => assert!(msg.contains("remote-boom"), "{msg:?}"),
            Err(other) => panic!("expected Panicked, got {other:?}"),
            Ok(v) => panic!("expected Panicked, got Ok({v})"),
        }
        // The remote loop keeps serving.
        assert_eq!(lt.handle.submit(|| async { 3u8 }).wait().unwrap(), 3);
        lt.shutdown();
    });
}

#[test]
fn remote_is_awaitable_from_another_loop_without_blocking_it() {
    guarded(|| {
        let lt = LoopThread::spawn("submit-loop");
        let lp = new_loop();
        let v = lp
            .run_until_complete(lt.handle.submit(|| async {
                shardloop::time::sleep(ms(5)).await;
                42u64
            }))
            .unwrap()
            .unwrap();
        assert_eq!(v, 42);

        // The remote work can only finish after a callback of the awaiting loop ran:
        // awaiting the Remote must not block this thread.
        let (tx, rx) = tokio::sync::oneshot::channel::<u64>();
        let remote = lt
            .handle
            .submit(move || async move { rx.await.unwrap() + 1 });
        lp.call_later(ms(10), move || {
            let _ = tx.send(41);
        })
        .unwrap();
        assert_eq!(lp.run_until_complete(remote).unwrap().unwrap(), 42);
        lp.close().unwrap();
        lt.shutdown();
    });
}

#[test]
fn submit_to_a_closed_loop_is_closed() {
    guarded(|| {
        let lp = new_loop();
        let handle = lp.handle();
        lp.close().unwrap();
        let h = handle.clone();
        let r = thread::spawn(move || h.submit(|| async { 1u32 }).wait())
            .join()
            .unwrap();
        expect_err!(r, Error::Closed);
        let h = handle.clone();
        let r = thread::spawn(move || h.submit(|| async { 1u32 }).wait_timeout(ms(50)))
            .join()
            .unwrap();
        expect_err!(r, Error::Closed);

        // Awaited from another loop.
        let other = new_loop();
        let r = other
            .run_until_complete(handle.submit(|| async { 1u32 }))
            .unwrap();
        expect_err!(r, Error::Closed);
        other.close().unwrap();
    });
}

// ---------------------------------------------------------------------------------------
// 2. current loop per thread
// ---------------------------------------------------------------------------------------

#[test]
fn get_event_loop_on_a_worker_thread_needs_set_event_loop() {
    guarded(|| {
        thread::Builder::new()
            .name("conformance-worker".into())
            .spawn(|| {
                match shardloop::get_event_loop() {
                    Err(Error::NoCurrentLoop { thread }) => assert!(
                        thread.contains("conformance-worker"),
                        "NoCurrentLoop names the thread: {thread:?}"
                    ),
                    Err(other) => panic!("expected NoCurrentLoop, got {other:?}"),
                    Ok(_) => panic!("a worker thread has no default loop"),
                }
                let lp = new_loop();
                expect_err!(shardloop::get_event_loop(), Error::NoCurrentLoop { .. });

                shardloop::set_event_loop(Some(lp.clone()));
                let current = shardloop::get_event_loop().expect("after set_event_loop");
                // It is the same loop: a callback scheduled through it runs on `lp`.
                let ran = Rc::new(Cell::new(false));
                let r = Rc::clone(&ran);
                current.call_soon(move || r.set(true)).unwrap();
                run_one_iteration(&lp);
                assert!(ran.get(), "get_event_loop() returned the loop that was set");

                shardloop::set_event_loop(None);
                expect_err!(shardloop::get_event_loop(), Error::NoCurrentLoop { .. });
                lp.close().unwrap();
            })
            .unwrap()
            .join()
            .unwrap_or_else(|p| resume_unwind(p));
    });
}

#[test]
fn set_event_loop_is_per_thread() {
    guarded(|| {
        let lp = new_loop();
        shardloop::set_event_loop(Some(lp.clone()));
        assert!(shardloop::get_event_loop().is_ok());
        let other = thread::spawn(|| match shardloop::get_event_loop() {
            Err(Error::NoCurrentLoop { .. }) => None,
            Err(e) => Some(format!("Err({e:?})")),
            Ok(_) => Some("Ok(loop)".to_string()),
        })
        .join()
        .unwrap();
        assert_eq!(
            other, None,
            "another thread does not see this thread's loop"
        );
        shardloop::set_event_loop(None);
        lp.close().unwrap();
    });
}

#[test]
fn get_running_loop_inside_and_outside_a_running_loop() {
    guarded(|| {
        expect_err!(shardloop::get_running_loop(), Error::NoRunningLoop);
        let lp = new_loop();
        expect_err!(shardloop::get_running_loop(), Error::NoRunningLoop);
        let ok = lp
            .run_until_complete(async {
                let running = shardloop::get_running_loop().expect("inside the loop");
                // get_event_loop() returns the running loop even where none was set.
                let current = shardloop::get_event_loop().expect("running loop is current");
                running.is_running() && current.is_running()
            })
            .unwrap();
        assert!(ok);

        // Inside a plain callback: the loop it returns is `lp` (its stop() stops `lp`).
        let errs: Log<String> = new_log();
        let e = Rc::clone(&errs);
        lp.call_soon(move || match shardloop::get_running_loop() {
            Ok(running) => running.stop(),
            Err(err) => e.borrow_mut().push(format!("{err:?}")),
        })
        .unwrap();
        // Hang guard only: if get_running_loop() returned some other loop, this stops `lp`.
        let watchdog_fired = Rc::new(Cell::new(false));
        let (lp2, w) = (lp.clone(), Rc::clone(&watchdog_fired));
        let watchdog = lp
            .call_later(Duration::from_secs(30), move || {
                w.set(true);
                lp2.stop();
            })
            .unwrap();
        lp.run_forever().unwrap();
        watchdog.cancel();
        assert!(items(&errs).is_empty(), "{:?}", items(&errs));
        assert!(
            !watchdog_fired.get(),
            "get_running_loop() in a callback did not return the loop running it"
        );

        expect_err!(shardloop::get_running_loop(), Error::NoRunningLoop);
        lp.close().unwrap();
    });
}

// ---------------------------------------------------------------------------------------
// 1/4. huge delays, time::sleep
// ---------------------------------------------------------------------------------------

#[test]
fn huge_delays_do_not_panic_or_overflow() {
    guarded(|| {
        let lp = new_loop();
        let fired = Rc::new(Cell::new(false));
        let f = Rc::clone(&fired);
        let t = lp.call_later(Duration::MAX, move || f.set(true)).unwrap();
        assert!(
            t.when() >= lp.time() + Duration::from_secs(365 * 24 * 3600),
            "Duration::MAX saturates to a far-future deadline"
        );
        let f = Rc::clone(&fired);
        let t2 = lp
            .call_later(Duration::from_secs(u64::MAX / 4), move || f.set(true))
            .unwrap();
        // One iteration with only a huge timer pending: the poll timeout is computed
        // from it without overflow.
        run_one_iteration(&lp);
        t.cancel();
        assert!(t.cancelled());
        run_one_iteration(&lp);
        t2.cancel();
        run_one_iteration(&lp);
        assert!(!fired.get());

        // A huge sleep inside a task, cancelled.
        let task = lp
            .create_task(shardloop::time::sleep(Duration::MAX))
            .unwrap();
        run_one_iteration(&lp);
        task.cancel();
        expect_err!(lp.run_until_complete(task).unwrap(), Error::Cancelled);
        lp.close().unwrap();
    });
}

#[test]
fn sleep_is_never_early() {
    guarded(|| {
        let lp = new_loop();
        let early: Vec<String> = lp
            .run_until_complete(async {
                let mut early = Vec::new();
                for d in [0u64, 1, 2, 5, 10, 20] {
                    let start = Instant::now();
                    shardloop::time::sleep(ms(d)).await;
                    let took = start.elapsed();
                    if took < ms(d) {
                        early.push(format!("sleep({d} ms) returned after {took:?}"));
                    }
                }
                let deadline = Instant::now() + ms(15);
                shardloop::time::sleep_until(deadline).await;
                let now = Instant::now();
                if now < deadline {
                    early.push(format!("sleep_until returned {:?} early", deadline - now));
                }
                early
            })
            .unwrap();
        assert!(early.is_empty(), "{early:?}");
        lp.close().unwrap();
    });
}

// ---------------------------------------------------------------------------------------
// 2. shardloop::run and spawn
// ---------------------------------------------------------------------------------------

#[test]
fn run_returns_the_value_and_leaves_no_loop_running() {
    guarded(|| {
        let v = shardloop::run(async {
            let lp = shardloop::get_running_loop().expect("run() runs a loop");
            let t = shardloop::spawn(async { 6u32 });
            let six = t.await.unwrap();
            if lp.is_running() {
                six + 1
            } else {
                0
            }
        })
        .unwrap();
        assert_eq!(v, 7);
        expect_err!(shardloop::get_running_loop(), Error::NoRunningLoop);
        // Called again on the same thread: a fresh loop each time.
        assert_eq!(shardloop::run(async { 8u8 }).unwrap(), 8);
    });
}

#[test]
fn run_does_not_leave_its_closed_loop_current() {
    guarded(|| {
        shardloop::run(async {}).unwrap();
        expect_err!(shardloop::get_event_loop(), Error::NoCurrentLoop { .. });
    });
}

#[test]
fn run_cancels_leftover_tasks() {
    guarded(|| {
        let (g, dropped) = drop_flag();
        let reached_end = Arc::new(AtomicBool::new(false));
        let e = Arc::clone(&reached_end);
        shardloop::run(async move {
            detach(shardloop::spawn(async move {
                let _g = g;
                shardloop::time::sleep(Duration::from_secs(3600)).await;
                e.store(true, Ordering::SeqCst);
            }));
            yield_now().await;
        })
        .unwrap();
        assert!(
            is_set(&dropped),
            "run() cancelled (dropped) the leftover task"
        );
        assert!(!is_set(&reached_end));
    });
}

#[test]
fn run_inside_a_running_loop_is_an_error() {
    guarded(|| {
        let lp = new_loop();
        let nested_is_err = lp
            .run_until_complete(async { shardloop::run(async { 1 }).is_err() })
            .unwrap();
        assert!(
            nested_is_err,
            "shardloop::run() inside a running loop must fail"
        );
        lp.close().unwrap();
    });
}

#[test]
fn spawn_creates_a_task_on_the_running_loop() {
    guarded(|| {
        let lp = new_loop();
        let v = lp
            .run_until_complete(async {
                let rc = Rc::new(3u32); // !Send is fine
                let t = shardloop::spawn(async move { *rc });
                t.await
            })
            .unwrap()
            .unwrap();
        assert_eq!(v, 3);

        // From a plain callback: the task runs on `lp`.
        let log = new_log();
        let l = Rc::clone(&log);
        lp.call_soon(move || {
            detach(shardloop::spawn(
                async move { l.borrow_mut().push("spawned") },
            ))
        })
        .unwrap();
        run_one_iteration(&lp);
        run_one_iteration(&lp);
        assert_eq!(items(&log), vec!["spawned"]);
        lp.close().unwrap();
    });
}

#[test]
fn spawn_outside_a_running_loop_panics() {
    guarded(|| {
        let r = catch_unwind(|| detach(shardloop::spawn(async {})));
        assert!(r.is_err(), "spawn() outside a running loop panics");
    });
}

// ---------------------------------------------------------------------------------------
// 1. builder / debug
// ---------------------------------------------------------------------------------------

#[test]
fn builder_debug_flag_is_reported() {
    guarded(|| {
        let lp = EventLoop::builder()
            .name("conformance")
            .debug(true)
            .slow_callback_duration(ms(100))
            .build()
            .unwrap();
        assert!(lp.get_debug());
        lp.call_soon(stopper(&lp)).unwrap();
        lp.run_forever().unwrap();
        lp.close().unwrap();

        if std::env::var_os("SHARDLOOP_DEBUG").is_none() {
            let plain = EventLoop::new().unwrap();
            assert!(!plain.get_debug(), "debug is off by default");
            plain.close().unwrap();
        }
    });
}

// ---------------------------------------------------------------------------------------
// 6. errors
// ---------------------------------------------------------------------------------------

#[test]
fn error_is_a_send_sync_std_error_and_handles_are_send_sync() {
    fn std_error<E: std::error::Error + Send + Sync + 'static>() {}
    fn send_sync_clone<T: Send + Sync + Clone + 'static>() {}
    std_error::<Error>();
    send_sync_clone::<LoopHandle>();
    // Errors cross threads and box into the usual dyn error.
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(Error::Closed);
    let back = thread::spawn(move || boxed.to_string()).join().unwrap();
    assert_eq!(back, Error::Closed.to_string());
    let io = Error::Io(std::io::Error::other("disk on fire"));
    assert!(io.to_string().contains("disk on fire"), "{io}");
}

#[test]
fn error_messages_are_asyncio_s_in_lower_case() {
    assert_eq!(Error::Closed.to_string(), "event loop is closed");
    assert_eq!(
        Error::AlreadyRunning.to_string(),
        "this event loop is already running"
    );
    let contains = [
        (
            Error::CloseWhileRunning,
            "cannot close a running event loop",
        ),
        (
            Error::StoppedBeforeComplete,
            "event loop stopped before future completed",
        ),
        (Error::NoRunningLoop, "no running event loop"),
        (
            Error::NoCurrentLoop {
                thread: "worker-7".into(),
            },
            "worker-7",
        ),
        (
            Error::NoCurrentLoop {
                thread: "worker-7".into(),
            },
            "no current event loop",
        ),
        (Error::Panicked("kaboom".into()), "kaboom"),
    ];
    for (e, needle) in contains {
        let s = e.to_string();
        assert!(
            s.contains(needle),
            "{e:?} displays {s:?}, expected {needle:?} in it"
        );
    }
    let all = [
        Error::Closed,
        Error::AlreadyRunning,
        Error::AnotherLoopRunning,
        Error::CloseWhileRunning,
        Error::StoppedBeforeComplete,
        Error::NoCurrentLoop {
            thread: "main".into(),
        },
        Error::NoRunningLoop,
        Error::WrongThread,
        Error::Cancelled,
        Error::Panicked("x".into()),
        Error::Timeout,
        Error::NotMainThread,
        Error::InvalidSignal,
    ];
    for e in all {
        let s = e.to_string();
        let first = s.chars().next().unwrap_or(' ');
        assert!(
            first.is_lowercase(),
            "{e:?} displays {s:?}: not a lower-case sentence"
        );
    }
}
