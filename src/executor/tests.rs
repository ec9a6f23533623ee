//! The default executor's unit tests: the pool alone, and through a loop the things
//! only the crate can see (its live thread count, its bound, a short idle timeout).
//! `tests/executor.rs` has the rest, through the public API only.
//!
//! Waits are bounded (a hang fails the test) but nothing asserts how long work takes.
//! The thread count is read from the loop's own pool, not from /proc, since tests of
//! one binary run side by side and /proc would see all their pools.

use super::*;
use std::sync::mpsc;
use std::sync::Barrier;

use crate::time::sleep;

/// Hang detector for the polling loops below, not a timing assertion.
const PATIENCE: Duration = Duration::from_secs(30);

/// Live threads of `lp`'s default executor (0 before its first job).
fn threads(lp: &EventLoop) -> usize {
    let pool = lp.inner.executor.pool.borrow();
    pool.as_ref().map_or(0, |p| p.threads.load(SeqCst))
}

/// How long `lp`'s executor threads wait for work before exiting; before its first
/// job only.
fn set_idle_timeout(lp: &EventLoop, idle: Duration) {
    lp.inner.executor.idle_timeout.set(Some(idle));
}

/// The executor's bound: `min(32, cpus + 4)`.
fn max_threads() -> usize {
    let max = default_max_threads();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        (5..=32).contains(&max) && max <= cpus + 4,
        "bound {max} for {cpus} cpus"
    );
    max
}

#[test]
fn a_long_job_does_not_hold_back_the_queue() {
    // Two threads at most; the first job blocks until the last one has run.
    let pool = Arc::new(Pool::new(2, Duration::from_secs(5)));
    let (tx, rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<u32>();
    pool.execute(Box::new(move |_| {
        let _ = rx.recv();
    }));
    for i in 0..50 {
        let done_tx = done_tx.clone();
        pool.execute(Box::new(move |_| done_tx.send(i).unwrap()));
    }
    let mut got: Vec<u32> = (0..50)
        .map(|_| done_rx.recv_timeout(Duration::from_secs(30)).unwrap())
        .collect();
    got.sort_unstable();
    assert_eq!(got, (0..50).collect::<Vec<_>>());
    tx.send(()).unwrap();
    pool.shutdown(Some(Duration::from_secs(30))).unwrap();
    assert_eq!(pool.threads.load(SeqCst), 0);
}

#[test]
fn a_thousand_jobs_all_complete_with_their_own_results() {
    let lp = EventLoop::new().unwrap();
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let results = lp
        .run_until_complete({
            let lp = lp.clone();
            let (running, most) = (running.clone(), most.clone());
            async move {
                let jobs: Vec<_> = (0..1000u64)
                    .map(|i| {
                        let (running, most) = (running.clone(), most.clone());
                        lp.run_in_executor(move || {
                            let now = running.fetch_add(1, SeqCst) + 1;
                            most.fetch_max(now, SeqCst);
                            if i % 50 == 0 {
                                // A few slower jobs, so that several threads are needed.
                                std::thread::sleep(Duration::from_millis(1));
                            }
                            running.fetch_sub(1, SeqCst);
                            i * i
                        })
                    })
                    .collect();
                let mut out = Vec::with_capacity(jobs.len());
                for job in jobs {
                    out.push(job.await.unwrap());
                }
                out
            }
        })
        .unwrap();
    assert_eq!(results, (0..1000u64).map(|i| i * i).collect::<Vec<_>>());
    let most = most.load(SeqCst);
    assert!(
        (1..=max_threads()).contains(&most),
        "{most} jobs ran at once; the pool allows {}",
        max_threads()
    );
    assert!(threads(&lp) <= max_threads());
    lp.close().unwrap();
}

#[test]
fn the_pool_is_bounded_and_jobs_beyond_it_wait_their_turn() {
    // max + 3 jobs that each wait until max of them run at once: the first max
    // start, then free their threads for the rest. More threads than max would show
    // in the count; fewer would hang (caught by the barrier's bounded wait).
    let lp = EventLoop::new().unwrap();
    let max = max_threads();
    let barrier = Arc::new(Barrier::new(max));
    let peak = Arc::new(AtomicUsize::new(0));
    let running = Arc::new(AtomicUsize::new(0));
    let done = lp
        .run_until_complete({
            let lp = lp.clone();
            async move {
                let jobs: Vec<_> = (0..max + 3)
                    .map(|i| {
                        let (barrier, peak, running) =
                            (barrier.clone(), peak.clone(), running.clone());
                        lp.run_in_executor(move || {
                            let now = running.fetch_add(1, SeqCst) + 1;
                            peak.fetch_max(now, SeqCst);
                            if i < max {
                                barrier.wait();
                            }
                            running.fetch_sub(1, SeqCst);
                        })
                    })
                    .collect();
                let mut done = 0;
                for job in jobs {
                    job.await.unwrap();
                    done += 1;
                }
                (done, peak.load(SeqCst))
            }
        })
        .unwrap();
    assert_eq!(done.0, max + 3);
    assert!(
        done.1 <= max,
        "{} jobs ran at once, over the bound {max}",
        done.1
    );
    assert!(threads(&lp) <= max);
    lp.close().unwrap();
}

#[test]
fn shutdown_finishes_queued_jobs_then_refuses_new_ones() {
    let lp = EventLoop::new().unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let jobs: Vec<_> = (0..100)
        .map(|_| {
            let ran = ran.clone();
            lp.run_in_executor(move || {
                ran.fetch_add(1, SeqCst);
            })
        })
        .collect();
    lp.shutdown_default_executor(PATIENCE).unwrap();
    assert_eq!(
        ran.load(SeqCst),
        100,
        "queued jobs ran before shutdown returned"
    );
    assert_eq!(threads(&lp), 0, "shutdown joined the threads");
    lp.run_until_complete(async move {
        for job in jobs {
            job.await.unwrap();
        }
    })
    .unwrap();
    let late = lp.run_until_complete(lp.run_in_executor(|| 1)).unwrap();
    assert!(matches!(late, Err(Error::Closed)), "got {late:?}");
    // Shutting down again is harmless.
    lp.shutdown_default_executor(Duration::ZERO).unwrap();
    lp.close().unwrap();
}

#[test]
fn a_shutdown_that_times_out_says_so_and_cancels_what_did_not_start() {
    let lp = EventLoop::new().unwrap();
    let (release, blocked) = std::sync::mpsc::channel::<()>();
    let started = Arc::new(Barrier::new(2));
    let s = started.clone();
    let long = lp.run_in_executor(move || {
        s.wait();
        let _ = blocked.recv_timeout(PATIENCE);
        "long"
    });
    started.wait(); // the long job is running
                    // Fill every other thread too (and wait until they all run: jobs need not start
                    // in the order they were queued), so that the next jobs stay queued.
    let max = max_threads();
    let gate = Arc::new(Barrier::new(max));
    let filling = Arc::new(AtomicUsize::new(0));
    let fillers: Vec<_> = (1..max)
        .map(|_| {
            let (gate, filling) = (gate.clone(), filling.clone());
            lp.run_in_executor(move || {
                filling.fetch_add(1, SeqCst);
                gate.wait();
            })
        })
        .collect();
    let start = Instant::now();
    while filling.load(SeqCst) < max - 1 {
        assert!(
            start.elapsed() < PATIENCE,
            "the pool did not run {max} jobs at once"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let queued: Vec<_> = (0..10).map(|i| lp.run_in_executor(move || i)).collect();
    let out = lp.shutdown_default_executor(Duration::from_millis(20));
    assert!(matches!(out, Err(Error::Timeout)), "got {out:?}");
    gate.wait(); // let the fillers finish
    release.send(()).unwrap();
    let (long, queued) = lp
        .run_until_complete(async move {
            for f in fillers {
                f.await.unwrap();
            }
            let mut results = Vec::new();
            for q in queued {
                results.push(q.await);
            }
            (long.await, results)
        })
        .unwrap();
    assert_eq!(
        long.unwrap(),
        "long",
        "a running job finishes after a timed-out shutdown"
    );
    for r in queued {
        assert!(
            matches!(r, Err(Error::Cancelled)),
            "a job not started before the timeout is cancelled, got {r:?}"
        );
    }
    lp.close().unwrap();
}

#[test]
fn threads_start_lazily() {
    let lp = EventLoop::new().unwrap();
    assert_eq!(threads(&lp), 0, "no thread before the first job");
    let one = lp.run_until_complete(lp.run_in_executor(|| 1)).unwrap();
    assert_eq!(one.unwrap(), 1);
    assert_eq!(threads(&lp), 1, "one job started one thread");
    lp.close().unwrap();
}

#[test]
fn idle_threads_exit() {
    let lp = EventLoop::new().unwrap();
    set_idle_timeout(&lp, Duration::from_millis(20));
    lp.run_until_complete({
        let lp = lp.clone();
        async move {
            // A job that holds its thread until the test has seen it: checked after
            // the jobs end instead, the threads may have timed out already on a slow
            // machine (valgrind), and the check would fail for no fault.
            let (release, held) = std::sync::mpsc::channel::<()>();
            let holder = lp.run_in_executor(move || {
                let _ = held.recv();
            });
            let jobs: Vec<_> = (0..8)
                .map(|_| lp.run_in_executor(|| std::thread::sleep(Duration::from_millis(2))))
                .collect();
            let start = Instant::now();
            while threads(&lp) == 0 {
                assert!(start.elapsed() < PATIENCE, "no thread started for the jobs");
                sleep(Duration::from_millis(1)).await;
            }
            release.send(()).unwrap();
            holder.await.unwrap();
            for job in jobs {
                job.await.unwrap();
            }
            let start = Instant::now();
            while threads(&lp) > 0 {
                assert!(start.elapsed() < PATIENCE, "idle threads did not exit");
                sleep(Duration::from_millis(5)).await;
            }
            // The pool starts threads again when work comes back.
            assert_eq!(lp.run_in_executor(|| 5).await.unwrap(), 5);
        }
    })
    .unwrap();
    lp.close().unwrap();
}

#[test]
fn a_cancelled_job_that_has_not_started_does_not_run() {
    let lp = EventLoop::new().unwrap();
    set_idle_timeout(&lp, Duration::from_secs(5));
    let max = max_threads();
    let gate = Arc::new(Barrier::new(max + 1));
    // Occupy every thread (waiting until they all run), then queue one more job and
    // cancel it.
    let filling = Arc::new(AtomicUsize::new(0));
    let busy: Vec<_> = (0..max)
        .map(|_| {
            let (gate, filling) = (gate.clone(), filling.clone());
            lp.run_in_executor(move || {
                filling.fetch_add(1, SeqCst);
                gate.wait();
            })
        })
        .collect();
    let start = Instant::now();
    while filling.load(SeqCst) < max {
        assert!(
            start.elapsed() < PATIENCE,
            "the pool did not run {max} jobs at once"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let victim = lp.run_in_executor(move || {
        r.fetch_add(1, SeqCst);
    });
    victim.cancel();
    gate.wait();
    for b in busy {
        b.wait().unwrap();
    }
    assert!(matches!(victim.wait(), Err(Error::Cancelled)));
    lp.shutdown_default_executor(PATIENCE).unwrap();
    assert_eq!(ran.load(SeqCst), 0, "the cancelled job ran");
    lp.close().unwrap();
}
