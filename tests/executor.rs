//! `run_in_executor` and the default executor (API.md section 4).
//!
//! Waits are bounded (a hang fails the test) but nothing asserts how long work
//! takes. The executor's thread count is read through a doc-hidden test hook,
//! since tests of one binary run side by side and /proc would see all their pools.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use shardloop::time::sleep;
use shardloop::{Error, EventLoop};

/// The executor's bound: `min(32, cpus + 4)`.
fn max_threads() -> usize {
    let max = EventLoop::new().unwrap().__executor_max_threads();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        (5..=32).contains(&max) && max <= cpus + 4,
        "bound {max} for {cpus} cpus"
    );
    max
}

/// Hang detector for the polling loops below, not a timing assertion.
const PATIENCE: Duration = Duration::from_secs(30);

#[test]
fn results_come_back_to_the_loop() {
    let lp = EventLoop::new().unwrap();
    let out = lp
        .run_until_complete(async {
            let lp = shardloop::get_running_loop().unwrap();
            let name = lp
                .run_in_executor(|| std::thread::current().name().map(str::to_string))
                .await
                .unwrap();
            let sum = lp
                .run_in_executor(|| (1..=100u64).sum::<u64>())
                .await
                .unwrap();
            (name, sum)
        })
        .unwrap();
    let (name, sum) = out;
    assert_eq!(sum, 5050);
    let name = name.expect("executor threads are named");
    assert!(
        name.starts_with("shardloop-executor-"),
        "thread name {name}"
    );
    lp.close().unwrap();
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
                            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            if i % 50 == 0 {
                                // A few slower jobs, so that several threads are needed.
                                std::thread::sleep(Duration::from_millis(1));
                            }
                            running.fetch_sub(1, Ordering::SeqCst);
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
    let most = most.load(Ordering::SeqCst);
    assert!(
        (1..=max_threads()).contains(&most),
        "{most} jobs ran at once; the pool allows {}",
        max_threads()
    );
    assert!(lp.__executor_threads() <= max_threads());
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
                            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(now, Ordering::SeqCst);
                            if i < max {
                                barrier.wait();
                            }
                            running.fetch_sub(1, Ordering::SeqCst);
                        })
                    })
                    .collect();
                let mut done = 0;
                for job in jobs {
                    job.await.unwrap();
                    done += 1;
                }
                (done, peak.load(Ordering::SeqCst))
            }
        })
        .unwrap();
    assert_eq!(done.0, max + 3);
    assert!(
        done.1 <= max,
        "{} jobs ran at once, over the bound {max}",
        done.1
    );
    assert!(lp.__executor_threads() <= max);
    lp.close().unwrap();
}

#[test]
fn a_panic_comes_back_as_panicked_and_the_pool_keeps_working() {
    let lp = EventLoop::new().unwrap();
    lp.run_until_complete({
        let lp = lp.clone();
        async move {
            let boom = lp
                .run_in_executor(|| -> u32 { panic!("boom in a job") })
                .await;
            match boom {
                Err(Error::Panicked(msg)) => assert!(msg.contains("boom in a job"), "{msg}"),
                other => panic!("expected Panicked, got {other:?}"),
            }
            let formatted = lp
                .run_in_executor(|| -> u32 { panic!("job {} failed", 7) })
                .await;
            assert!(matches!(formatted, Err(Error::Panicked(m)) if m == "job 7 failed"));
            assert_eq!(lp.run_in_executor(|| 3).await.unwrap(), 3);
        }
    })
    .unwrap();
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
                ran.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    lp.shutdown_default_executor(PATIENCE).unwrap();
    assert_eq!(
        ran.load(Ordering::SeqCst),
        100,
        "queued jobs ran before shutdown returned"
    );
    assert_eq!(lp.__executor_threads(), 0, "shutdown joined the threads");
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
                filling.fetch_add(1, Ordering::SeqCst);
                gate.wait();
            })
        })
        .collect();
    let start = Instant::now();
    while filling.load(Ordering::SeqCst) < max - 1 {
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
    assert_eq!(lp.__executor_threads(), 0, "no thread before the first job");
    let one = lp.run_until_complete(lp.run_in_executor(|| 1)).unwrap();
    assert_eq!(one.unwrap(), 1);
    assert_eq!(lp.__executor_threads(), 1, "one job started one thread");
    lp.close().unwrap();
}

#[test]
fn idle_threads_exit() {
    let lp = EventLoop::new().unwrap();
    lp.__set_executor_idle_timeout(Duration::from_millis(20));
    lp.run_until_complete({
        let lp = lp.clone();
        async move {
            let jobs: Vec<_> = (0..8)
                .map(|_| lp.run_in_executor(|| std::thread::sleep(Duration::from_millis(2))))
                .collect();
            for job in jobs {
                job.await.unwrap();
            }
            assert!(lp.__executor_threads() >= 1);
            let start = Instant::now();
            while lp.__executor_threads() > 0 {
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
fn close_stops_the_executor_and_later_jobs_are_refused() {
    let lp = EventLoop::new().unwrap();
    let job = lp.run_in_executor(|| 9);
    lp.close().unwrap();
    // A job queued before close still runs; its result can be waited for elsewhere.
    assert_eq!(job.wait().unwrap(), 9);
    assert!(matches!(
        lp.run_in_executor(|| 0).wait(),
        Err(Error::Closed)
    ));
}

#[test]
fn run_closes_the_executor_of_its_loop() {
    let lp = shardloop::run(async {
        let lp = shardloop::get_running_loop().unwrap();
        assert_eq!(lp.run_in_executor(|| 2).await.unwrap(), 2);
        lp
    })
    .unwrap();
    assert!(lp.is_closed());
    assert!(matches!(
        lp.run_in_executor(|| 0).wait(),
        Err(Error::Closed)
    ));
}

#[test]
fn a_cancelled_job_that_has_not_started_does_not_run() {
    let lp = EventLoop::new().unwrap();
    lp.__set_executor_idle_timeout(Duration::from_secs(5));
    let max = max_threads();
    let gate = Arc::new(Barrier::new(max + 1));
    // Occupy every thread (waiting until they all run), then queue one more job and
    // cancel it.
    let filling = Arc::new(AtomicUsize::new(0));
    let busy: Vec<_> = (0..max)
        .map(|_| {
            let (gate, filling) = (gate.clone(), filling.clone());
            lp.run_in_executor(move || {
                filling.fetch_add(1, Ordering::SeqCst);
                gate.wait();
            })
        })
        .collect();
    let start = Instant::now();
    while filling.load(Ordering::SeqCst) < max {
        assert!(
            start.elapsed() < PATIENCE,
            "the pool did not run {max} jobs at once"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let victim = lp.run_in_executor(move || {
        r.fetch_add(1, Ordering::SeqCst);
    });
    victim.cancel();
    gate.wait();
    for b in busy {
        b.wait().unwrap();
    }
    assert!(matches!(victim.wait(), Err(Error::Cancelled)));
    lp.shutdown_default_executor(PATIENCE).unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 0, "the cancelled job ran");
    lp.close().unwrap();
}
