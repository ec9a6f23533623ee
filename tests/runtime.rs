//! Behaviour of the thread-per-core `Runtime`: start-up and pinning, routing,
//! cross-shard submits, backpressure, panics, stats and graceful shutdown.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use shardloop::{current_shard, time::sleep, Error, Runtime, TrySubmitError};

const LONG: Duration = Duration::from_secs(3600);

/// The CPUs this test process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is valid; sched_getaffinity writes at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    assert_eq!(
        rc,
        0,
        "sched_getaffinity: {}",
        std::io::Error::last_os_error()
    );
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: CPU_ISSET only reads the set, every index is in range.
    (0..max)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// (the CPU this thread runs on, the CPUs it may run on), read inside a shard.
fn where_am_i() -> (usize, Vec<usize>) {
    // SAFETY: sched_getcpu takes no arguments and only reads the thread's state.
    let cpu = unsafe { libc::sched_getcpu() };
    assert!(cpu >= 0, "sched_getcpu failed");
    (cpu as usize, allowed_cpus())
}

#[test]
fn every_shard_runs_on_its_own_pinned_cpu() {
    let allowed = allowed_cpus();
    if allowed.len() < 2 {
        println!("skipped: this process may use only {allowed:?}, pinning cannot be told apart");
        return;
    }
    let rt = Runtime::builder()
        .shards(allowed.len())
        .pin_to_cores(true)
        .build()
        .unwrap();
    let seen: Vec<(usize, Vec<usize>)> = rt
        .broadcast(|_| async { where_am_i() })
        .into_iter()
        .map(|r| r.wait().unwrap())
        .collect();
    let mut cpus = HashSet::new();
    for (i, (cpu, mask)) in seen.iter().enumerate() {
        let pinned = rt.pinned_cpu(i).expect("pinning was asked for");
        assert_eq!(
            *cpu, pinned,
            "shard {i} runs on CPU {cpu}, pinned to {pinned}"
        );
        assert_eq!(mask, &[pinned], "shard {i} may run only on its own CPU");
        cpus.insert(*cpu);
    }
    assert_eq!(cpus.len(), allowed.len(), "one CPU per shard: {seen:?}");
    assert_eq!(cpus, allowed.iter().copied().collect::<HashSet<_>>());
}

#[test]
fn more_shards_than_cpus_share_them_round_robin() {
    let allowed = allowed_cpus();
    let n = 2 * allowed.len() + 1;
    let rt = Runtime::builder()
        .shards(n)
        .pin_to_cores(true)
        .build()
        .unwrap();
    assert_eq!(rt.len(), n);
    let seen: Vec<(usize, Vec<usize>)> = rt
        .broadcast(|_| async { where_am_i() })
        .into_iter()
        .map(|r| r.wait().unwrap())
        .collect();
    for (i, (cpu, mask)) in seen.iter().enumerate() {
        let expected = allowed[i % allowed.len()];
        assert_eq!(rt.pinned_cpu(i), Some(expected));
        assert_eq!(
            (*cpu, mask.as_slice()),
            (expected, &[expected][..]),
            "shard {i}"
        );
    }
}

#[test]
fn one_shard_runtime_serves_and_shuts_down() {
    let rt = Runtime::builder().shards(1).build().unwrap();
    assert_eq!(rt.len(), 1);
    assert_eq!(rt.shard_for(&"anything"), 0);
    assert_eq!(rt.submit_to(0, || async { 7 }).wait().unwrap(), 7);
    let report = rt.shutdown(Duration::from_secs(1)).unwrap();
    assert_eq!(report.shards().len(), 1);
    assert_eq!(report.cancelled(), 0);
}

#[test]
fn zero_shards_is_refused() {
    let err = Runtime::builder().shards(0).build().unwrap_err();
    assert!(err.to_string().contains("at least one shard"), "{err}");
}

#[test]
fn shard_threads_and_loops_are_named() {
    let rt = Runtime::builder()
        .shards(2)
        .thread_name("web")
        .build()
        .unwrap();
    let names: Vec<_> = rt
        .broadcast(|_| async {
            let lp = shardloop::get_running_loop().unwrap();
            (
                thread::current().name().map(String::from),
                lp.name().to_string(),
            )
        })
        .into_iter()
        .map(|r| r.wait().unwrap())
        .collect();
    assert_eq!(names[0], (Some("web-0".into()), "web-0".into()));
    assert_eq!(names[1], (Some("web-1".into()), "web-1".into()));
    assert_eq!(rt.shard(1).name(), "web-1");
}

#[test]
fn current_shard_inside_and_outside() {
    let rt = Runtime::builder().shards(3).build().unwrap();
    assert_eq!(current_shard(), None);
    let inside: Vec<_> = rt
        .broadcast(|i| async move { (i, current_shard()) })
        .into_iter()
        .map(|r| r.wait().unwrap())
        .collect();
    assert_eq!(inside, [(0, Some(0)), (1, Some(1)), (2, Some(2))]);
    // A plain thread spawned from a shard is not a shard.
    let from_child = rt
        .submit_to(1, || async { thread::spawn(current_shard).join().unwrap() })
        .wait()
        .unwrap();
    assert_eq!(from_child, None);
}

#[test]
fn shard_for_is_stable_and_spreads_keys() {
    let a = Runtime::builder().shards(3).build().unwrap();
    let b = Runtime::builder().shards(3).build().unwrap();
    let mut used = HashSet::new();
    for k in 0..1000u64 {
        let s = a.shard_for(&k);
        assert!(s < 3);
        assert_eq!(s, a.shard_for(&k), "same key, same runtime");
        assert_eq!(s, b.shard_for(&k), "same key, same shard count");
        used.insert(s);
    }
    assert_eq!(used.len(), 3, "1000 keys reach every shard");
    let user = a.shard_for("user:42");
    assert_eq!(
        user,
        a.shard_for(&String::from("user:42")),
        "str and String agree"
    );
    // Fixed across runs: not a randomly seeded hasher.
    assert_eq!(
        (0..8u64).map(|k| a.shard_for(&k)).collect::<Vec<_>>(),
        (0..8u64).map(|k| b.shard_for(&k)).collect::<Vec<_>>()
    );
}

#[test]
fn submit_and_broadcast_return_results() {
    let rt = Runtime::builder().shards(2).build().unwrap();
    // The future may be !Send: it is made on the shard.
    let r = rt.submit_to(1, || async {
        let local = std::rc::Rc::new(20);
        sleep(Duration::from_millis(1)).await;
        *local + 22
    });
    assert_eq!(r.wait().unwrap(), 42);
    let squares: Vec<usize> = rt
        .broadcast(|i| async move { i * i })
        .into_iter()
        .map(|r| r.wait().unwrap())
        .collect();
    assert_eq!(squares, [0, 1]);
    // Awaited from a plain thread's own loop.
    let v = rt
        .block_on(rt.submit_to(0, || async { "hi" }))
        .unwrap()
        .unwrap();
    assert_eq!(v, "hi");
}

/// 8 x 100k submits: about a second and a half in a debug build on 2 cores.
const PER_THREAD: u64 = 100_000;

#[test]
fn submits_from_8_threads_none_lost() {
    let rt = Runtime::builder().shards(2).build().unwrap();
    let ran = [AtomicU64::new(0), AtomicU64::new(0)];
    let ran = Arc::new(ran);
    let sums: Vec<u64> = thread::scope(|s| {
        let workers: Vec<_> = (0..8u64)
            .map(|t| {
                let (rt, ran) = (&rt, ran.clone());
                s.spawn(move || {
                    let remotes: Vec<_> = (0..PER_THREAD)
                        .map(|i| {
                            let shard = ((t + i) % 2) as usize;
                            let ran = ran.clone();
                            rt.submit_to(shard, move || async move {
                                assert_eq!(current_shard(), Some(shard));
                                ran[shard].fetch_add(1, Ordering::Relaxed);
                                t * PER_THREAD + i
                            })
                        })
                        .collect();
                    remotes.into_iter().map(|r| r.wait().unwrap()).sum::<u64>()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let n = 8 * PER_THREAD;
    assert_eq!(
        sums.iter().sum::<u64>(),
        n * (n - 1) / 2,
        "every result came back"
    );
    assert_eq!(ran[0].load(Ordering::Relaxed), n / 2);
    assert_eq!(ran[1].load(Ordering::Relaxed), n / 2);
    let report = rt.shutdown(Duration::from_secs(5)).unwrap();
    assert_eq!(report.cancelled(), 0);
}

#[test]
fn submit_from_shard_to_shard_and_back() {
    let rt = Arc::new(Runtime::builder().shards(2).build().unwrap());
    let rt1 = rt.clone();
    let trip = rt
        .submit_to(0, move || async move {
            let rt2 = rt1.clone();
            let (there, back) = rt1
                .submit_to(1, move || async move {
                    // Awaiting a Remote inside a shard: shard 1 asks shard 0.
                    let back = rt2.submit_to(0, || async { current_shard() }).await;
                    (current_shard(), back.unwrap())
                })
                .await
                .unwrap();
            [current_shard(), there, back]
        })
        .wait()
        .unwrap();
    assert_eq!(trip, [Some(0), Some(1), Some(0)]);
    rt.shutdown(Duration::from_secs(1)).unwrap();
}

#[test]
fn submitting_to_the_own_shard_stays_on_its_thread() {
    let rt = Arc::new(Runtime::builder().shards(2).build().unwrap());
    let rt1 = rt.clone();
    let (outer, inner) = rt
        .submit_to(1, move || async move {
            let me = thread::current().id();
            let inner = rt1
                .submit_to(1, || async { thread::current().id() })
                .await
                .unwrap();
            (me, inner)
        })
        .wait()
        .unwrap();
    assert_eq!(outer, inner);
    rt.shutdown(Duration::from_secs(1)).unwrap();
}

#[test]
fn bounded_inbox_blocks_and_try_submit_hands_work_back() {
    let rt = Runtime::builder()
        .shards(2)
        .inbox_capacity(2)
        .build()
        .unwrap();
    assert_eq!(rt.shard(0).inbox_capacity(), Some(2));
    let h0 = rt.shard(0).clone();
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    // Shard 0 blocks its thread (on purpose) so its inbox stops draining.
    let blocker = rt.submit_to(0, move || async move {
        started_tx.send(()).unwrap();
        release_rx.recv().unwrap();
        // Its own inbox is full now, yet a shard can always submit to itself.
        let own = h0
            .try_submit(|| async { 6 })
            .expect("never Full on the own shard");
        own.await.unwrap() + h0.submit(|| async { 0 }).await.unwrap()
    });
    started_rx.recv().unwrap();

    // Two jobs fit; the third is handed back.
    let a = rt.submit_to(0, || async { 1 });
    let b = rt.submit_to(0, || async { 2 });
    let factory = match rt.try_submit(0, || async { 3 }) {
        Err(TrySubmitError::Full(f)) => f,
        other => panic!("expected Full, got {other:?}"),
    };
    // Shard 1's inbox is separate: not full.
    assert_eq!(
        rt.try_submit(1, || async { 10 }).unwrap().wait().unwrap(),
        10
    );

    let submitted = AtomicBool::new(false);
    thread::scope(|s| {
        // A plain thread's submit blocks until there is room.
        let blocked = s.spawn(|| {
            let r = rt.submit_to(0, factory);
            submitted.store(true, Ordering::SeqCst);
            r.wait()
        });
        // A loop thread's submit does not block: the plain submit is refused with
        // Full at once (buffering it would make the bound meaningless), and
        // submit_async waits for room while shard 1 keeps serving.
        let h0 = rt.shard(0).clone();
        let via_loop = rt.submit_to(1, move || async move {
            let sync_style = h0.submit(|| async { 4 }).await;
            assert!(matches!(sync_style, Err(Error::Full)), "{sync_style:?}");
            let async_style = h0.submit_async(|| async { 5 }).await.unwrap();
            4 + async_style.await.unwrap()
        });
        for i in 0..3 {
            assert_eq!(rt.submit_to(1, move || async move { i }).wait().unwrap(), i);
        }
        thread::sleep(Duration::from_millis(50));
        // Deterministic: shard 0 has not taken a job out of its inbox since.
        assert!(
            !submitted.load(Ordering::SeqCst),
            "the submit waited for room"
        );
        assert!(!via_loop.is_finished());

        release_tx.send(()).unwrap();
        assert_eq!(blocked.join().unwrap().unwrap(), 3);
        assert_eq!(via_loop.wait().unwrap(), 9);
    });
    assert_eq!(a.wait().unwrap() + b.wait().unwrap(), 3);
    assert_eq!(blocker.wait().unwrap(), 6);
    let report = rt.shutdown(Duration::from_secs(5)).unwrap();
    assert_eq!(report.cancelled(), 0);
}

#[test]
fn closing_a_loop_wakes_submitters_blocked_on_its_full_inbox() {
    let lp = shardloop::EventLoop::builder()
        .inbox_capacity(Some(1))
        .build()
        .unwrap();
    let handle = lp.handle();
    // The loop is not running: the first job (from another thread: on the loop's own
    // thread it would skip the inbox) fills the inbox, the second blocks.
    let h = handle.clone();
    let queued = thread::spawn(move || h.submit(|| async { 1 }))
        .join()
        .unwrap();
    let h = handle.clone();
    let blocked = thread::spawn(move || h.submit(|| async { 2 }).wait());
    thread::sleep(Duration::from_millis(20));
    lp.close().unwrap();
    // Whether it was already blocked or not, the second submit is refused.
    assert!(matches!(blocked.join().unwrap(), Err(Error::Closed)));
    assert!(
        matches!(queued.wait(), Err(Error::Cancelled)),
        "dropped at close"
    );
    assert!(matches!(
        handle.try_submit(|| async {}),
        Err(TrySubmitError::Closed(_))
    ));
}

#[test]
fn shutdown_with_a_submitter_blocked_on_a_full_inbox_ends() {
    let rt = Runtime::builder()
        .shards(1)
        .inbox_capacity(1)
        .build()
        .unwrap();
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let _blocker = rt.submit_to(0, move || async move {
        started_tx.send(()).unwrap();
        release_rx.recv().unwrap();
    });
    started_rx.recv().unwrap();
    let queued = rt.submit_to(0, || async { 1 }); // fills the inbox
    let h0 = rt.shard(0).clone();
    let blocked = thread::spawn(move || h0.submit(|| async { 2 }).wait());
    release_tx.send(()).unwrap();
    let report = rt.shutdown(Duration::from_secs(5)).unwrap();
    assert_eq!(queued.wait().unwrap(), 1);
    // It got in and ran, or came too late: refused, or dropped at close. Never lost.
    match blocked.join().unwrap() {
        Ok(2) | Err(Error::Closed) | Err(Error::Cancelled) => {}
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(report.cancelled(), 0);
}

#[test]
fn a_panicking_task_leaves_every_shard_serving() {
    let rt = Runtime::builder().shards(2).build().unwrap();
    let boom = rt.submit_to(0, || async {
        sleep(Duration::from_millis(1)).await;
        panic!("boom on shard 0")
    });
    match boom.wait() {
        Err(Error::Panicked(msg)) => assert_eq!(msg, "boom on shard 0"),
        other => panic!("expected Panicked, got {other:?}"),
    }
    let _ = rt
        .shard(1)
        .call_soon_threadsafe(|| panic!("a callback panics too"));
    for round in 0..3 {
        let all: Vec<usize> = rt
            .broadcast(move |i| async move { i + round })
            .into_iter()
            .map(|r| r.wait().unwrap())
            .collect();
        assert_eq!(all, [round, round + 1]);
    }
    let report = rt.shutdown(Duration::from_secs(1)).unwrap();
    assert_eq!(report.cancelled(), 0);
}

#[test]
fn shutdown_cancels_pending_and_sleeping_tasks_after_the_grace() {
    let rt = Runtime::builder().shards(2).build().unwrap();
    let sleeping = rt.submit_to(0, || async {
        sleep(LONG).await;
        "woke"
    });
    let pending = rt.submit_to(1, std::future::pending::<()>);
    let _detached = rt.submit_to(1, || sleep(LONG));
    // A timer callback with no task: dropped, not run.
    rt.submit_to(0, || async {
        let lp = shardloop::get_running_loop().unwrap();
        lp.call_later(LONG, || unreachable!("dropped at close"))
            .unwrap();
    })
    .wait()
    .unwrap();
    // A plain thread waiting on a Remote is released by the shutdown.
    let waiter = thread::spawn(move || sleeping.wait());

    let grace = Duration::from_millis(200);
    let start = Instant::now();
    let report = rt.shutdown(grace).unwrap();
    assert!(
        start.elapsed() >= grace,
        "the grace period is waited out in full"
    );
    assert_eq!(report.shards()[0].tasks_cancelled, 1);
    assert_eq!(report.shards()[1].tasks_cancelled, 2);
    assert_eq!(report.cancelled(), 3);
    assert_eq!(report.shards()[0].callbacks_dropped, 1);
    assert_eq!(report.dropped(), 1);
    assert!(matches!(waiter.join().unwrap(), Err(Error::Cancelled)));
    assert!(matches!(pending.wait(), Err(Error::Cancelled)));

    // After shutdown, new work is refused with Closed.
    assert!(rt.is_closed());
    assert!(matches!(
        rt.submit_to(0, || async {}).wait(),
        Err(Error::Closed)
    ));
    assert!(matches!(
        rt.try_submit(1, || async {}),
        Err(TrySubmitError::Closed(_))
    ));
    assert!(matches!(
        rt.block_on(rt.submit_to_async(0, || async {})),
        Ok(Err(Error::Closed))
    ));
    assert!(matches!(rt.stats(), Err(Error::Closed)));
    assert!(matches!(rt.shutdown(grace), Err(Error::Closed)));
}

#[test]
fn shutdown_lets_running_tasks_finish_within_the_grace() {
    let rt = Runtime::builder().shards(2).build().unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let remotes: Vec<_> = (0..6)
        .map(|i| {
            let done = done.clone();
            rt.submit_to(i % 2, move || async move {
                sleep(Duration::from_millis(20)).await;
                done.fetch_add(1, Ordering::SeqCst);
                i
            })
        })
        .collect();
    // Generous: the tasks need ~20 ms; the shutdown returns as soon as they are done.
    let grace = Duration::from_secs(60);
    let start = Instant::now();
    let report = rt.shutdown(grace).unwrap();
    assert!(start.elapsed() < grace, "did not wait out the whole grace");
    assert_eq!(done.load(Ordering::SeqCst), 6);
    assert_eq!(report.finished(), 6);
    assert_eq!(report.cancelled(), 0);
    assert_eq!(report.dropped(), 0);
    let results: Vec<usize> = remotes.into_iter().map(|r| r.wait().unwrap()).collect();
    assert_eq!(results, [0, 1, 2, 3, 4, 5]);
}

#[test]
fn shutdown_from_a_shard_is_refused() {
    let rt = Arc::new(Runtime::builder().shards(2).build().unwrap());
    let rt1 = rt.clone();
    let r = rt
        .submit_to(0, move || async move {
            let refused = matches!(rt1.shutdown(Duration::ZERO), Err(Error::BlockingInShard));
            let stats = matches!(rt1.stats(), Err(Error::BlockingInShard));
            let async_stats = rt1.stats_async().await.map(|s| s.len());
            (refused, stats, async_stats.ok())
        })
        .wait()
        .unwrap();
    assert_eq!(r, (true, true, Some(2)));
    rt.shutdown(Duration::from_secs(1)).unwrap();
}

#[test]
fn stats_come_from_every_shard() {
    let rt = Runtime::builder().shards(2).build().unwrap();
    for _ in 0..10 {
        // Work that waits runs as a task (work that finishes at once needs none).
        rt.submit_to(1, || shardloop::time::sleep(Duration::ZERO))
            .wait()
            .unwrap();
    }
    let stats = rt.stats().unwrap();
    assert_eq!(stats.len(), 2);
    assert!(stats[1].tasks_polled >= 10, "{:?}", stats[1]);
    assert!(stats[1].tasks_finished >= 10, "{:?}", stats[1]);
    assert!(stats[1].callbacks_run > stats[0].callbacks_run);
}

#[test]
fn a_failing_shard_start_fails_build_and_joins_the_others() {
    static ENDED: AtomicUsize = AtomicUsize::new(0);
    struct OnExit;
    impl Drop for OnExit {
        fn drop(&mut self) {
            ENDED.fetch_add(1, Ordering::SeqCst);
        }
    }
    thread_local!(static GUARD: std::cell::RefCell<Option<OnExit>> = const { std::cell::RefCell::new(None) });
    let err = Runtime::builder()
        .shards(4)
        .on_shard_start(|i| {
            GUARD.with(|g| *g.borrow_mut() = Some(OnExit));
            if i == 2 {
                panic!("shard 2 refuses to start");
            }
        })
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, Error::Panicked(m) if m == "shard 2 refuses to start"),
        "{err:?}"
    );
    // Every shard thread ran its hook and has ended (thread-locals are dropped
    // before a join returns).
    assert_eq!(ENDED.load(Ordering::SeqCst), 4);
}

#[test]
fn dropping_the_runtime_joins_its_shards() {
    let ended = Arc::new(AtomicUsize::new(0));
    struct OnExit(Arc<AtomicUsize>);
    impl Drop for OnExit {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    thread_local!(static GUARD: std::cell::RefCell<Option<OnExit>> = const { std::cell::RefCell::new(None) });
    let e = ended.clone();
    let rt = Runtime::builder()
        .shards(3)
        .on_shard_start(move |_| GUARD.with(|g| *g.borrow_mut() = Some(OnExit(e.clone()))))
        .build()
        .unwrap();
    let r = rt.submit_to(2, || async { 1 });
    assert_eq!(ended.load(Ordering::SeqCst), 0);
    drop(rt);
    assert_eq!(ended.load(Ordering::SeqCst), 3);
    assert_eq!(
        r.wait().unwrap(),
        1,
        "accepted work ran before the drop finished"
    );
}

/// A runtime dropped by one of its own shards (a task owned it) does not block that
/// shard joining the others: the drop returns while the other shard's long task is
/// still inside its grace period, and every shard still ends afterwards.
#[test]
fn dropping_the_runtime_on_its_own_shard_does_not_block_it() {
    struct Flag(Arc<AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let rt = Runtime::builder().shards(2).build().unwrap();
    let other_ended = Arc::new(AtomicBool::new(false));
    let flag = Flag(other_ended.clone());
    // Shard 1 runs a task that ends only when the shutdown cancels it, after the
    // grace period (5 s).
    let _long = rt.submit_to(1, move || async move {
        let _flag = flag;
        sleep(LONG).await;
    });
    let (ended, seen) = (other_ended.clone(), Arc::new(Mutex::new(None)));
    let seen2 = seen.clone();
    let rt = Arc::new(Mutex::new(Some(rt)));
    let owner = rt.clone();
    let dropped = rt
        .lock()
        .unwrap()
        .as_ref()
        .unwrap()
        .submit_to(0, move || async move {
            let rt = owner.lock().unwrap().take();
            drop(rt);
            // Had the drop joined shard 1, its task would have ended first.
            *seen2.lock().unwrap() = Some(ended.load(Ordering::SeqCst));
        });
    assert!(matches!(dropped.wait(), Ok(()) | Err(Error::Cancelled)));
    assert_eq!(
        *seen.lock().unwrap(),
        Some(false),
        "the drop blocked its shard"
    );
    // Shard 1 still shuts down by itself, at the end of its grace period.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !other_ended.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "shard 1 never shut down");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn block_on_uses_the_calling_threads_loop() {
    let rt = Runtime::builder().shards(1).build().unwrap();
    thread::scope(|s| {
        s.spawn(|| {
            assert!(
                shardloop::get_event_loop().is_err(),
                "a worker thread starts with none"
            );
            let v = rt.block_on(async { rt.submit_to(0, || async { 3 }).await.unwrap() + 1 });
            assert_eq!(v.unwrap(), 4);
            // The fresh loop became this thread's loop, and is reused.
            let lp = shardloop::get_event_loop().unwrap();
            let again =
                rt.block_on(async { shardloop::get_running_loop().unwrap().name().to_string() });
            assert_eq!(again.unwrap(), lp.name());
        });
    });
    // On a shard, whose loop already runs, block_on is refused.
    let rt = Arc::new(rt);
    let rt1 = rt.clone();
    let r = rt
        .submit_to(0, move || async move {
            matches!(rt1.block_on(async {}), Err(Error::AlreadyRunning))
        })
        .wait()
        .unwrap();
    assert!(r);
    rt.shutdown(Duration::from_secs(1)).unwrap();
}

/// Records warnings, for the stall detector test.
struct Recorder(Mutex<Vec<String>>);

impl log::Log for Recorder {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            self.0.lock().unwrap().push(r.args().to_string());
        }
    }
    fn flush(&self) {}
}

fn recorder() -> &'static Recorder {
    static REC: OnceLock<&'static Recorder> = OnceLock::new();
    REC.get_or_init(|| {
        let rec: &'static Recorder = Box::leak(Box::new(Recorder(Mutex::new(Vec::new()))));
        log::set_logger(rec).expect("the only logger of this test binary");
        log::set_max_level(log::LevelFilter::Warn);
        rec
    })
}

#[test]
fn debug_mode_logs_slow_callbacks_with_the_shard_name() {
    let rec = recorder();
    let rt = Runtime::builder()
        .shards(2)
        .thread_name("stall")
        .debug(true)
        .slow_callback_duration(Duration::from_millis(5))
        .build()
        .unwrap();
    rt.submit_to(1, || async { thread::sleep(Duration::from_millis(30)) })
        .wait()
        .unwrap();
    rt.shutdown(Duration::from_secs(1)).unwrap();
    let lines = rec.0.lock().unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("[stall-1] executing") && l.contains("took")),
        "{lines:?}"
    );
}

#[test]
fn runtime_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Runtime>();
    check::<shardloop::Remote<u8>>();
}
