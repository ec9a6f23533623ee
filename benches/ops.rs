//! Per-operation costs of the shardloop event loop (criterion).
//!
//! Loop-thread operations run in batches of BATCH, each batch followed by one loop
//! iteration (`stop()` then `run_forever()`) that runs or cleans up what it queued, so
//! the reported time per op includes its share of running the loop.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use shardloop::EventLoop;
use std::{
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

const BATCH: u64 = 1024;

/// Times `iters` calls of `op` on `lp`, running one loop iteration after each batch.
fn batched(lp: &EventLoop, iters: u64, mut op: impl FnMut()) -> Duration {
    let start = Instant::now();
    let mut left = iters;
    while left > 0 {
        let k = left.min(BATCH);
        (0..k).for_each(|_| op());
        lp.stop(); // stop before run_forever: exactly one iteration
        lp.run_forever().unwrap();
        left -= k;
    }
    start.elapsed()
}

fn loop_ops(c: &mut Criterion) {
    let lp = EventLoop::new().unwrap();
    let mut g = c.benchmark_group("loop");
    g.bench_function("call_soon+run", |b| {
        b.iter_custom(|iters| {
            batched(&lp, iters, || {
                let _handle = lp.call_soon(|| black_box(())).unwrap();
            })
        })
    });
    g.bench_function("call_later+cancel", |b| {
        b.iter_custom(|iters| {
            batched(&lp, iters, || {
                lp.call_later(Duration::from_secs(60), || ())
                    .unwrap()
                    .cancel()
            })
        })
    });
    g.bench_function("create_task+complete", |b| {
        b.iter_custom(|iters| {
            batched(&lp, iters, || {
                let _detached = lp.create_task(async { black_box(1u64) }).unwrap();
            })
        })
    });
    g.finish();
}

/// From this thread to a loop running on another one, until the last callback has run.
fn threadsafe(c: &mut Criterion) {
    let (tx, rx) = mpsc::channel();
    let looper = thread::spawn(move || {
        let lp = EventLoop::new().unwrap();
        tx.send(lp.handle()).unwrap();
        lp.run_forever().unwrap();
    });
    let handle = rx.recv().unwrap();
    c.bench_function("call_soon_threadsafe (cross-thread, until run)", |b| {
        b.iter_custom(|iters| {
            let (done_tx, done_rx) = mpsc::sync_channel(1);
            let start = Instant::now();
            for _ in 1..iters {
                handle.call_soon_threadsafe(|| black_box(())).unwrap();
            }
            handle
                .call_soon_threadsafe(move || done_tx.send(()).unwrap())
                .unwrap();
            done_rx.recv().unwrap();
            start.elapsed()
        })
    });
    handle.stop();
    looper.join().unwrap();
}

criterion_group!(benches, loop_ops, threadsafe);
criterion_main!(benches);
