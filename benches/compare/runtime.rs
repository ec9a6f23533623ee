//! The thread-per-core runtime against tokio and raw flume: cross-shard submit
//! throughput, shard-to-shard round trips, blocking thread -> shard -> result, and a
//! scaling table.
//!
//! A module of `benches/compare.rs` (`#[path = "compare/runtime.rs"] mod runtime;`).
//! Every contender is a `fn(u64) -> Duration`: it builds its own runtimes and threads,
//! times only the measured part, checks its result, and tears down. [`WORKLOADS`]
//! lists them in the harness's shape: (key, title, base N, ours, peers).
//!
//! The tokio peers are two current-thread runtimes, each driven by its own thread,
//! the closest tokio has to two shards. Nothing is pinned on either side.

#![allow(dead_code)] // the harness may wire only some of these

use std::collections::VecDeque;
use std::future::Future;
use std::thread;
use std::time::{Duration, Instant};

use shardloop::{channel, LoopHandle, Runtime};
use tokio::sync::{mpsc, oneshot};

/// One contender: builds its own runtime(s), returns the time of the measured part.
pub type Contender = fn(u64) -> Duration;

/// (key, title, base N, ours, peers), like the harness's `Workload`.
pub type RuntimeWorkload = (
    &'static str,
    &'static str,
    f64,
    Contender,
    &'static [(&'static str, Contender)],
);

/// The runtime workloads, in the harness's shape.
pub const WORKLOADS: &[RuntimeWorkload] = &[
    (
        "rt_submit_throughput",
        "submit shard 0 -> shard 1, all awaited (window 1024)",
        1e6,
        sl_cross_submit,
        &[
            ("tokio 2 rt: Handle::spawn + oneshot", tokio_cross_spawn),
            ("raw flume Box<dyn FnOnce> + reply", flume_cross),
        ],
    ),
    (
        "rt_round_trip",
        "round trips shard 0 <-> shard 1, sequential",
        1e5,
        sl_round_trip_submit,
        &[
            ("tokio 2 rt: mpsc ping-pong", tokio_ping_pong),
            ("shardloop channel ping-pong", sl_channel_ping_pong),
        ],
    ),
    (
        "rt_round_trip_spin",
        "round trips, shards spin 50 us before parking",
        1e5,
        sl_round_trip_submit_spinning,
        &[("tokio 2 rt: mpsc ping-pong (parks)", tokio_ping_pong)],
    ),
    (
        "rt_blocking_submit",
        "blocking thread -> shard -> result, sequential",
        1e5,
        sl_blocking_submit,
        &[("tokio Handle::spawn + blocking_recv", tokio_blocking_spawn)],
    ),
];

/// Results still awaited at once by a producer, so that 1M submits do not hold 1M
/// results in memory.
const WINDOW: usize = 1024;

fn sum_to(n: u64) -> u64 {
    n * n.saturating_sub(1) / 2
}

fn shardloop_rt(shards: usize) -> Runtime {
    Runtime::builder().shards(shards).build().unwrap()
}

/// Shards that look for work (inbox and I/O, yielding between looks) for up to 50 µs
/// before they park.
fn spinning_rt(shards: usize) -> Runtime {
    Runtime::builder()
        .shards(shards)
        .spin_before_park(Duration::from_micros(50))
        .build()
        .unwrap()
}

fn shut(rt: Runtime) {
    let report = rt.shutdown(Duration::from_secs(10)).unwrap();
    assert_eq!(report.cancelled(), 0);
}

/// On a loop: submits `n` jobs to `to`, keeping WINDOW results in flight; their sum.
async fn windowed_submits(to: LoopHandle, n: u64) -> u64 {
    let mut inflight = VecDeque::with_capacity(WINDOW);
    let mut sum = 0;
    for i in 0..n {
        if inflight.len() == WINDOW {
            let r: shardloop::Remote<u64> = inflight.pop_front().unwrap();
            sum += r.await.unwrap();
        }
        inflight.push_back(to.submit(move || async move { i }));
    }
    for r in inflight {
        sum += r.await.unwrap();
    }
    sum
}

// ------------------------------------------------------------ tokio: two runtimes

/// A current-thread tokio runtime driven by its own thread, like a shard: its
/// handle, and what stops and joins it.
struct TokioShard {
    handle: tokio::runtime::Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl TokioShard {
    fn start() -> Self {
        let (htx, hrx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            htx.send(rt.handle().clone()).unwrap();
            // Drives every task spawned through the handle until told to stop.
            let _ = rt.block_on(stopped);
        });
        TokioShard {
            handle: hrx.recv().unwrap(),
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for TokioShard {
    fn drop(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.thread.take().unwrap().join().unwrap();
    }
}

fn tokio_block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

// ------------------------------------------------------------ 1. submit throughput

/// Shard 0 submits `n` jobs to shard 1 and awaits every result.
pub fn sl_cross_submit(n: u64) -> Duration {
    let rt = shardloop_rt(2);
    let to = rt.shard(1).clone();
    let start = Instant::now();
    let sum = rt
        .submit_to(0, move || windowed_submits(to, n))
        .wait()
        .unwrap();
    let took = start.elapsed();
    assert_eq!(sum, sum_to(n));
    shut(rt);
    took
}

/// Runtime A's task spawns `n` tasks on runtime B, each answering through a oneshot.
pub fn tokio_cross_spawn(n: u64) -> Duration {
    let b = TokioShard::start();
    let hb = b.handle.clone();
    let start = Instant::now();
    let sum = tokio_block_on(async move {
        let mut inflight = VecDeque::with_capacity(WINDOW);
        let mut sum = 0;
        for i in 0..n {
            if inflight.len() == WINDOW {
                let rx: oneshot::Receiver<u64> = inflight.pop_front().unwrap();
                sum += rx.await.unwrap();
            }
            let (tx, rx) = oneshot::channel();
            hb.spawn(async move {
                let _ = tx.send(i);
            });
            inflight.push_back(rx);
        }
        for rx in inflight {
            sum += rx.await.unwrap();
        }
        sum
    });
    let took = start.elapsed();
    assert_eq!(sum, sum_to(n));
    took
}

/// The floor: boxed closures through a flume channel to a thread that runs them, each
/// sending its result back on a second channel.
pub fn flume_cross(n: u64) -> Duration {
    type Job = Box<dyn FnOnce() + Send>;
    let (jobs, queue) = flume::unbounded::<Job>();
    let worker = thread::spawn(move || queue.iter().for_each(|job| job()));
    let (reply, replies) = flume::unbounded::<u64>();
    let start = Instant::now();
    let mut inflight = 0;
    let mut sum = 0;
    for i in 0..n {
        if inflight == WINDOW {
            sum += replies.recv().unwrap();
            inflight -= 1;
        }
        let reply = reply.clone();
        jobs.send(Box::new(move || reply.send(i).unwrap())).unwrap();
        inflight += 1;
    }
    for _ in 0..inflight {
        sum += replies.recv().unwrap();
    }
    let took = start.elapsed();
    drop(jobs);
    worker.join().unwrap();
    assert_eq!(sum, sum_to(n));
    took
}

// ------------------------------------------------------------ 2. round trips

/// Shard 0 submits to shard 1 and awaits the result, `n` times in a row.
pub fn sl_round_trip_submit(n: u64) -> Duration {
    round_trips(shardloop_rt(2), n)
}

/// [`sl_round_trip_submit`] with shards that spin before parking.
pub fn sl_round_trip_submit_spinning(n: u64) -> Duration {
    round_trips(spinning_rt(2), n)
}

fn round_trips(rt: Runtime, n: u64) -> Duration {
    let to = rt.shard(1).clone();
    let start = Instant::now();
    let sum = rt
        .submit_to(0, move || async move {
            let mut sum = 0;
            for i in 0..n {
                sum += to.submit(move || async move { i }).await.unwrap();
            }
            sum
        })
        .wait()
        .unwrap();
    let took = start.elapsed();
    assert_eq!(sum, sum_to(n));
    shut(rt);
    took
}

/// Shard 0 and shard 1 bounce a number through two `shardloop::channel`s.
pub fn sl_channel_ping_pong(n: u64) -> Duration {
    let rt = shardloop_rt(2);
    let (ping_tx, ping_rx) = channel::bounded::<u64>(1);
    let (pong_tx, pong_rx) = channel::bounded::<u64>(1);
    let echo = rt.submit_to(1, move || async move {
        while let Ok(v) = ping_rx.recv_async().await {
            pong_tx.send_async(v).await.unwrap();
        }
    });
    let start = Instant::now();
    let sum = rt
        .submit_to(0, move || async move {
            let mut sum = 0;
            for i in 0..n {
                ping_tx.send_async(i).await.unwrap();
                sum += pong_rx.recv_async().await.unwrap();
            }
            sum
        })
        .wait()
        .unwrap();
    let took = start.elapsed();
    echo.wait().unwrap();
    assert_eq!(sum, sum_to(n));
    shut(rt);
    took
}

/// Runtime A and runtime B bounce a number through two tokio mpsc channels.
pub fn tokio_ping_pong(n: u64) -> Duration {
    let b = TokioShard::start();
    let (ping_tx, mut ping_rx) = mpsc::channel::<u64>(1);
    let (pong_tx, mut pong_rx) = mpsc::channel::<u64>(1);
    let echo = b.handle.spawn(async move {
        while let Some(v) = ping_rx.recv().await {
            pong_tx.send(v).await.unwrap();
        }
    });
    let start = Instant::now();
    let sum = tokio_block_on(async move {
        let mut sum = 0;
        for i in 0..n {
            ping_tx.send(i).await.unwrap();
            sum += pong_rx.recv().await.unwrap();
        }
        sum
    });
    let took = start.elapsed();
    tokio_block_on(echo).unwrap();
    assert_eq!(sum, sum_to(n));
    took
}

// ------------------------------------------------------------ 3. blocking thread

/// A plain thread submits to shard 0 and waits for each result in turn.
pub fn sl_blocking_submit(n: u64) -> Duration {
    let rt = shardloop_rt(1);
    let start = Instant::now();
    let mut sum = 0;
    for i in 0..n {
        sum += rt.submit_to(0, move || async move { i }).wait().unwrap();
    }
    let took = start.elapsed();
    assert_eq!(sum, sum_to(n));
    shut(rt);
    took
}

/// A plain thread spawns on a tokio runtime and `blocking_recv`s each result.
pub fn tokio_blocking_spawn(n: u64) -> Duration {
    let b = TokioShard::start();
    let start = Instant::now();
    let mut sum = 0;
    for i in 0..n {
        let (tx, rx) = oneshot::channel();
        b.handle.spawn(async move {
            let _ = tx.send(i);
        });
        sum += rx.blocking_recv().unwrap();
    }
    let took = start.elapsed();
    assert_eq!(sum, sum_to(n));
    took
}

// ------------------------------------------------------------ 4. scaling

/// Shard counts to measure: 1, 2, 4, ... up to the CPUs this machine has (and that
/// number itself).
pub fn scaling_shard_counts() -> Vec<usize> {
    let cpus = num_cpus::get().max(1);
    let mut counts: Vec<usize> = std::iter::successors(Some(1usize), |s| Some(s * 2))
        .take_while(|&s| s <= cpus)
        .collect();
    if counts.last() != Some(&cpus) {
        counts.push(cpus);
    }
    counts
}

/// Every shard submits `n / shards` jobs to the next shard (a ring; with one shard
/// it submits to itself, which skips the inbox), all at once; the time until every
/// result is back.
pub fn sl_ring_submits(shards: usize, n: u64) -> Duration {
    let rt = shardloop_rt(shards);
    let per_shard = n / shards as u64;
    let handles = rt.shards().to_vec();
    let start = Instant::now();
    let sums: Vec<u64> = rt
        .broadcast(move |i| windowed_submits(handles[(i + 1) % handles.len()].clone(), per_shard))
        .into_iter()
        .map(|r| r.wait().unwrap())
        .collect();
    let took = start.elapsed();
    assert!(sums.iter().all(|&s| s == sum_to(per_shard)));
    shut(rt);
    took
}

/// The scaling table rows: (shards, total submits, median time of `rounds` runs).
pub fn scaling(n: u64, rounds: usize) -> Vec<(usize, u64, Duration)> {
    scaling_shard_counts()
        .into_iter()
        .map(|shards| {
            let mut times: Vec<Duration> = (0..rounds.max(1))
                .map(|_| sl_ring_submits(shards, n))
                .collect();
            times.sort();
            let total = n / shards as u64 * shards as u64;
            (shards, total, times[times.len() / 2])
        })
        .collect()
}

/// Prints the scaling table (markdown).
pub fn print_scaling(n: u64, rounds: usize) {
    println!("| shards | submits | time | submits/s |");
    println!("|-------:|--------:|-----:|----------:|");
    for (shards, total, t) in scaling(n, rounds) {
        println!(
            "| {shards} | {total} | {:.2} ms | {:.2} M/s |",
            t.as_secs_f64() * 1e3,
            total as f64 / t.as_secs_f64() / 1e6
        );
    }
}
