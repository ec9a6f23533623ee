//! shardloop against tokio, raw queues and Python asyncio on the same workloads.
//!
//! `cargo bench --bench compare` prints one row per (workload, peer): the median of
//! ROUNDS alternating rounds (shardloop, peer, [peer2,] shardloop, ...) in one run.
//! ratio = peer / shardloop, so > 1 means shardloop is faster (or smaller).
//! Env: COMPARE_SCALE (default 1.0) scales every N; COMPARE_ONLY=substring filters
//! workloads by key. Memory is measured in child processes (this binary re-executed
//! with COMPARE_MEM_CASE set) from /proc/self/status.

#[path = "compare/exec.rs"]
mod exec;
#[path = "compare/io.rs"]
mod io;
#[path = "compare/runtime.rs"]
mod runtime;
#[path = "compare/sync.rs"]
mod sync;
#[path = "compare/udp.rs"]
mod udp;

use shardloop::EventLoop;
use std::{
    cell::Cell,
    collections::VecDeque,
    env,
    path::Path,
    process::Command,
    rc::Rc,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};
use tokio::{
    runtime::Runtime,
    sync::{oneshot, Notify},
    task::LocalSet,
};

const ROUNDS: usize = 5;
const MEM_ENV: &str = "COMPARE_MEM_CASE";
const FAR: Duration = Duration::from_secs(3600);
const TIMER_SPREAD_NS: u64 = 2_000_000;

/// One contender: builds its own loop/runtime, then returns the time of the measured part.
type Contender = fn(u64) -> Duration;

struct Workload {
    key: &'static str,
    title: &'static str,
    base_n: f64,
    ours: Contender,
    peers: &'static [(&'static str, Contender)],
}

const WORKLOADS: &[Workload] = &[
    Workload {
        key: "udp_echo",
        title: "UDP echo, 32 in flight x 64 B, shardloop proactor",
        base_n: 200_000.0,
        ours: udp::sl_proactor_udp_echo,
        peers: &[
            ("tokio current_thread", udp::tokio_udp_echo),
            ("shardloop epoll", udp::sl_epoll_udp_echo),
        ],
    },
    Workload {
        key: "tcp_echo",
        title: "TCP echo, 64 conns x 64 B",
        base_n: 200_000.0,
        ours: io::sl_tcp_echo,
        peers: &[("tokio current_thread", io::tokio_tcp_echo)],
    },
    Workload {
        key: "call_soon_batch",
        title: "call_soon queued, then run",
        base_n: 1e6,
        ours: sl_batch,
        peers: &[
            ("tokio spawn_local (tasks vs callbacks)", tokio_spawn_local),
            ("VecDeque<Box<dyn FnOnce>>", vecdeque_batch),
        ],
    },
    Workload {
        key: "call_soon_chain",
        title: "chained call_soon",
        base_n: 1e6,
        ours: sl_chain,
        peers: &[(
            "tokio chained spawn_local (tasks vs callbacks)",
            tokio_chain,
        )],
    },
    Workload {
        key: "tasks",
        title: "create_task + complete",
        base_n: 1e6,
        ours: sl_tasks,
        peers: &[
            ("tokio spawn_local", tokio_spawn_local),
            ("async-task + VecDeque run queue", async_task_tasks),
        ],
    },
    Workload {
        key: "threadsafe",
        title: "call_soon_threadsafe, 1 producer",
        base_n: 1e6,
        ours: sl_threadsafe,
        peers: &[
            ("tokio Handle::spawn (tasks vs callbacks)", tokio_threadsafe),
            ("flume Box<dyn FnOnce+Send>", flume_threadsafe),
        ],
    },
    Workload {
        key: "threadsafe_8",
        title: "call_soon_threadsafe, 8 producers",
        base_n: 1e6,
        ours: sl_threadsafe_8,
        peers: &[
            (
                "tokio Handle::spawn (tasks vs callbacks)",
                tokio_threadsafe_8,
            ),
            ("flume Box<dyn FnOnce+Send>", flume_threadsafe_8),
        ],
    },
    Workload {
        key: "sleep_tasks",
        title: "tasks that sleep 0..2ms, half cancelled",
        base_n: 2e5,
        ours: sl_sleep_tasks,
        peers: &[("tokio spawn_local + sleep + abort", tokio_timers)],
    },
    Workload {
        key: "timers",
        title: "call_later 0..2ms, half cancelled",
        base_n: 2e5,
        ours: sl_timers,
        peers: &[
            ("tokio sleep tasks (tasks vs callbacks)", tokio_timers),
            ("tokio-util DelayQueue", delay_queue_timers),
        ],
    },
    Workload {
        key: "queue",
        title: "Queue, producer task -> consumer task, unbounded",
        base_n: 1e6,
        ours: sync::sl_queue,
        peers: &[(
            "tokio mpsc::unbounded_channel, spawn_local",
            sync::tokio_mpsc,
        )],
    },
    Workload {
        key: "lock",
        title: "Lock acquire + release, uncontended",
        base_n: 1e6,
        ours: sync::sl_lock,
        peers: &[("tokio Mutex lock + drop", sync::tokio_mutex)],
    },
    Workload {
        key: "semaphore",
        title: "Semaphore acquire + release, uncontended",
        base_n: 1e6,
        ours: sync::sl_semaphore,
        peers: &[("tokio Semaphore acquire + drop", sync::tokio_semaphore)],
    },
    Workload {
        key: "run_in_executor",
        title: "run_in_executor, tiny jobs",
        base_n: exec::EXECUTOR_JOBS,
        ours: exec::sl_run_in_executor,
        peers: &[
            ("tokio spawn_blocking", exec::tokio_spawn_blocking),
            (
                "tokio spawn_blocking, same cap",
                exec::tokio_spawn_blocking_capped,
            ),
        ],
    },
];

/// (key, title, shardloop case, peer name, peer case) for the memory rows.
const MEM_CASES: &[(&str, &str, &str, &str, &str)] = &[
    (
        "mem_timers",
        "pending call_later (MB)",
        "sl_timers",
        "tokio sleep futures (vs callbacks)",
        "tokio_sleep",
    ),
    (
        "mem_tasks",
        "pending tasks (MB)",
        "sl_tasks",
        "tokio spawn_local",
        "tokio_tasks",
    ),
];

fn main() {
    if let Ok(case) = env::var(MEM_ENV) {
        mem_child(&case, scaled(1e6));
    }
    let only = env::var("COMPARE_ONLY").unwrap_or_default();
    let selected = |key: &str| key.contains(only.as_str());
    let asyncio = run_asyncio();
    let mut rows = Vec::new();
    let runtime_workloads: Vec<Workload> = runtime::WORKLOADS
        .iter()
        .map(|&(key, title, base_n, ours, peers)| Workload {
            key,
            title,
            base_n,
            ours,
            peers,
        })
        .collect();
    for w in WORKLOADS
        .iter()
        .chain(&runtime_workloads)
        .filter(|w| selected(w.key))
    {
        let n = scaled(w.base_n);
        eprintln!("running {} (N = {n}) ...", w.key);
        let contenders: Vec<Contender> = std::iter::once(w.ours)
            .chain(w.peers.iter().map(|p| p.1))
            .collect();
        let medians = alternating_medians(n, &contenders);
        let py = asyncio.iter().find(|(k, _)| k == w.key).map(|p| p.1);
        for (i, ((peer, _), &t)) in w.peers.iter().zip(&medians[1..]).enumerate() {
            let (first, ours) = (i == 0, medians[0]);
            let py = py.filter(|_| first); // asyncio shown once per workload
            rows.push([
                if first {
                    format!("{} (N={n})", w.title)
                } else {
                    String::new()
                },
                peer.to_string(),
                secs(ours),
                secs(t),
                ratio(t, ours),
                py.map_or(String::new(), secs),
                py.map_or(String::new(), |p| ratio(p, ours)),
            ]);
        }
    }
    if selected("sleep_lateness") {
        eprintln!("running sleep_lateness ...");
        rows.extend(exec::lateness_rows(scaled(exec::SLEEP_SAMPLES)));
    }
    for &(key, title, ours, peer, theirs) in MEM_CASES.iter().filter(|c| selected(c.0)) {
        eprintln!("running {key} ...");
        let (a, b) = (mem_in_child(ours), mem_in_child(theirs));
        let mb = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.1} MB"));
        let r = a.zip(b).map_or("n/a".into(), |(a, b)| ratio(b, a));
        let title = format!("{title} (N={})", scaled(1e6));
        rows.push([
            title,
            peer.into(),
            mb(a),
            mb(b),
            r,
            String::new(),
            String::new(),
        ]);
    }
    print_table(&rows);
    if selected("rt_scaling") {
        eprintln!("running rt_scaling ...");
        runtime::print_scaling(scaled(1e6), 3);
    }
}

fn scaled(base: f64) -> u64 {
    let scale: f64 = env::var("COMPARE_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    ((base * scale).round() as u64).max(2)
}

/// Runs every contender ROUNDS times, alternating, and returns each one's median seconds.
fn alternating_medians(n: u64, contenders: &[Contender]) -> Vec<f64> {
    let mut times = vec![Vec::with_capacity(ROUNDS); contenders.len()];
    for _ in 0..ROUNDS {
        for (run, t) in contenders.iter().zip(&mut times) {
            t.push(run(n).as_secs_f64());
        }
    }
    times.into_iter().map(median).collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn secs(s: f64) -> String {
    format!("{:.2} ms", s * 1e3)
}

fn ratio(peer: f64, ours: f64) -> String {
    format!("{:.2}x", peer / ours)
}

fn print_table(rows: &[[String; 7]]) {
    let head = [
        "workload",
        "peer",
        "shardloop",
        "peer time",
        "ratio",
        "asyncio",
        "vs asyncio",
    ];
    let head = head.map(String::from);
    let widths: Vec<usize> = (0..7)
        .map(|c| {
            rows.iter()
                .chain([&head])
                .map(|r| r[c].len())
                .max()
                .unwrap()
        })
        .collect();
    let line = |cells: &[String; 7]| {
        let cells = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (s, w))| match c {
                0 | 1 => format!("{s:<w$}"),
                _ => format!("{s:>w$}"),
            });
        println!("| {} |", cells.collect::<Vec<_>>().join(" | "));
    };
    line(&head);
    println!(
        "|{}|",
        widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("|")
    );
    rows.iter().for_each(line);
    println!(
        "ratio = peer / shardloop (asyncio / shardloop): > 1 means shardloop is faster or smaller"
    );
}

// ---------------------------------------------------------------- helpers

fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn tokio_rt() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Polls every task already spawned on `local` once (its queue is FIFO).
fn poll_all(rt: &Runtime, local: &LocalSet) {
    let (tx, rx) = oneshot::channel();
    local.spawn_local(async move { tx.send(()).unwrap() });
    local.block_on(rt, rx).unwrap();
}

/// The deadline of timer `i` of `n`, spread evenly over 0..20ms after `start`.
fn deadline(start: Instant, i: u64, n: u64) -> Instant {
    start + Duration::from_nanos(TIMER_SPREAD_NS * i / n)
}

/// A shared completion counter: the `n`-th hit calls `done`.
struct Counter<D> {
    count: AtomicU64,
    n: u64,
    done: D,
}

impl<D: Fn()> Counter<D> {
    fn hit(&self) {
        if self.count.fetch_add(1, Relaxed) + 1 == self.n {
            (self.done)()
        }
    }
}

/// Starts `threads` producer threads that make `n` calls of `send` between them.
fn producers<D, S>(threads: u64, n: u64, done: D, send: S) -> (Arc<Counter<D>>, Vec<JoinHandle<()>>)
where
    D: Fn() + Send + Sync + 'static,
    S: Fn(Arc<Counter<D>>) + Send + Sync + 'static,
{
    let counter = Arc::new(Counter {
        count: AtomicU64::new(0),
        n,
        done,
    });
    let send = Arc::new(send);
    let handles = (0..threads)
        .map(|t| {
            let (c, send) = (counter.clone(), send.clone());
            let share = n / threads + u64::from(t < n % threads);
            thread::spawn(move || (0..share).for_each(|_| send(c.clone())))
        })
        .collect();
    (counter, handles)
}

// ---------------------------------------------------------------- 1. call_soon batch

fn sl_batch(n: u64) -> Duration {
    let lp = EventLoop::new().unwrap();
    let c = Rc::new(Cell::new(0u64));
    let t = timed(|| {
        for _ in 0..n {
            let c = c.clone();
            lp.call_soon(move || c.set(c.get() + 1)).unwrap();
        }
        let l = lp.clone();
        lp.call_soon(move || l.stop()).unwrap();
        lp.run_forever().unwrap();
    });
    assert_eq!(c.get(), n);
    t
}

fn tokio_spawn_local(n: u64) -> Duration {
    let (rt, local) = (tokio_rt(), LocalSet::new());
    let c = Rc::new(Cell::new(0u64));
    let t = timed(|| {
        for _ in 0..n {
            let c = c.clone();
            local.spawn_local(async move { c.set(c.get() + 1) });
        }
        rt.block_on(local);
    });
    assert_eq!(c.get(), n);
    t
}

fn vecdeque_batch(n: u64) -> Duration {
    let c = Rc::new(Cell::new(0u64));
    let t = timed(|| {
        let mut q: VecDeque<Box<dyn FnOnce()>> = VecDeque::new();
        for _ in 0..n {
            let c = c.clone();
            q.push_back(Box::new(move || c.set(c.get() + 1)));
        }
        while let Some(f) = q.pop_front() {
            f()
        }
    });
    assert_eq!(c.get(), n);
    t
}

// ---------------------------------------------------------------- 2. chained call_soon

fn sl_chain(n: u64) -> Duration {
    fn step(lp: EventLoop, left: u64) {
        if left == 0 {
            lp.stop()
        } else {
            lp.clone().call_soon(move || step(lp, left - 1)).unwrap();
        }
    }
    let lp = EventLoop::new().unwrap();
    timed(|| {
        step(lp.clone(), n);
        lp.run_forever().unwrap();
    })
}

fn tokio_chain(n: u64) -> Duration {
    async fn step(left: u64) {
        if left > 1 {
            tokio::task::spawn_local(step(left - 1));
        }
    }
    let (rt, local) = (tokio_rt(), LocalSet::new());
    timed(|| {
        local.spawn_local(step(n));
        rt.block_on(local);
    })
}

// ---------------------------------------------------------------- 3. tasks

fn sl_tasks(n: u64) -> Duration {
    let lp = EventLoop::new().unwrap();
    let s = Rc::new((Cell::new(0u64), lp.clone()));
    let t = timed(|| {
        for _ in 0..n {
            let s = s.clone();
            let _detached = lp
                .create_task(async move {
                    s.0.set(s.0.get() + 1);
                    if s.0.get() == n {
                        s.1.stop()
                    }
                })
                .unwrap();
        }
        lp.run_forever().unwrap();
    });
    assert_eq!(s.0.get(), n);
    t
}

thread_local! {
    static RUN_QUEUE: std::cell::RefCell<VecDeque<async_task::Runnable>> =
        const { std::cell::RefCell::new(VecDeque::new()) };
}

/// The well-kept crate the loop's tasks could have been built on: async-task's
/// one-allocation tasks on a bare thread-local run queue, with none of a loop's
/// bookkeeping (no table of live tasks for close, no budget, no panic catching).
/// The floor a hand-written task must be measured against.
fn async_task_tasks(n: u64) -> Duration {
    // A fresh queue each round, as every other contender starts from a fresh loop.
    RUN_QUEUE.with(|q| *q.borrow_mut() = VecDeque::new());
    let c = Rc::new(Cell::new(0u64));
    let t = timed(|| {
        for _ in 0..n {
            let c = c.clone();
            let schedule = |r| RUN_QUEUE.with(|q| q.borrow_mut().push_back(r));
            let (runnable, task) =
                async_task::spawn_local(async move { c.set(c.get() + 1) }, schedule);
            runnable.schedule();
            task.detach();
        }
        while let Some(r) = RUN_QUEUE.with(|q| q.borrow_mut().pop_front()) {
            r.run();
        }
    });
    assert_eq!(c.get(), n);
    t
}

// ---------------------------------------------------------------- 4. threadsafe

fn sl_threadsafe(n: u64) -> Duration {
    sl_threadsafe_from(1, n)
}

fn sl_threadsafe_8(n: u64) -> Duration {
    sl_threadsafe_from(8, n)
}

fn sl_threadsafe_from(threads: u64, n: u64) -> Duration {
    let lp = EventLoop::new().unwrap();
    let (h, stop) = (lp.handle(), lp.handle());
    let mut counter = None;
    let t = timed(|| {
        let (c, ps) = producers(
            threads,
            n,
            move || stop.stop(),
            move |c| h.call_soon_threadsafe(move || c.hit()).unwrap(),
        );
        lp.run_forever().unwrap();
        ps.into_iter().for_each(|p| p.join().unwrap());
        counter = Some(c);
    });
    assert_eq!(counter.unwrap().count.load(Relaxed), n);
    t
}

fn tokio_threadsafe(n: u64) -> Duration {
    tokio_threadsafe_from(1, n)
}

fn tokio_threadsafe_8(n: u64) -> Duration {
    tokio_threadsafe_from(8, n)
}

fn tokio_threadsafe_from(threads: u64, n: u64) -> Duration {
    let rt = tokio_rt();
    let (h, notify) = (rt.handle().clone(), Arc::new(Notify::new()));
    let done = notify.clone();
    let mut counter = None;
    let t = timed(|| {
        let (c, ps) = producers(
            threads,
            n,
            move || done.notify_one(),
            move |c| {
                h.spawn(async move { c.hit() });
            },
        );
        rt.block_on(notify.notified());
        ps.into_iter().for_each(|p| p.join().unwrap());
        counter = Some(c);
    });
    assert_eq!(counter.unwrap().count.load(Relaxed), n);
    t
}

fn flume_threadsafe(n: u64) -> Duration {
    flume_threadsafe_from(1, n)
}

fn flume_threadsafe_8(n: u64) -> Duration {
    flume_threadsafe_from(8, n)
}

/// A raw flume channel of boxed closures, drained in a loop: the floor for a
/// threadsafe call.
fn flume_threadsafe_from(threads: u64, n: u64) -> Duration {
    type Job = Box<dyn FnOnce() + Send>;
    let mut counter = None;
    let t = timed(|| {
        let (tx, rx) = flume::unbounded::<Job>();
        let (c, ps) = producers(
            threads,
            n,
            || (),
            move |c| tx.send(Box::new(move || c.hit())).unwrap(),
        );
        rx.iter().for_each(|job| job()); // ends when the producers drop `tx`
        ps.into_iter().for_each(|p| p.join().unwrap());
        counter = Some(c);
    });
    assert_eq!(counter.unwrap().count.load(Relaxed), n);
    t
}

// ---------------------------------------------------------------- 5. timers

/// Even timers fire, odd ones are cancelled.
fn fired(n: u64) -> u64 {
    n.div_ceil(2)
}

fn sl_timers(n: u64) -> Duration {
    let lp = EventLoop::new().unwrap();
    let s = Rc::new((Cell::new(0u64), lp.clone()));
    let t = timed(|| {
        let start = Instant::now();
        let mut cancel = Vec::with_capacity(n as usize / 2);
        for i in 0..n {
            let s = s.clone();
            let h = lp.call_at(deadline(start, i, n), move || {
                s.0.set(s.0.get() + 1);
                if s.0.get() == fired(n) {
                    s.1.stop()
                }
            });
            if i % 2 == 1 {
                cancel.push(h.unwrap());
            }
        }
        cancel.iter().for_each(|h| h.cancel());
        lp.run_forever().unwrap();
    });
    assert_eq!(s.0.get(), fired(n));
    t
}

/// Tokio arms a sleep only when its task is first polled, so the tasks are polled once
/// before half are aborted: both sides cancel armed timers. A task whose deadline passed
/// during that first poll completes there, so a few "cancelled" ones may fire instead.
fn tokio_timers(n: u64) -> Duration {
    let (rt, local) = (tokio_rt(), LocalSet::new());
    let c = Rc::new(Cell::new(0u64));
    let t = timed(|| {
        let start = Instant::now();
        let mut abort = Vec::with_capacity(n as usize / 2);
        for i in 0..n {
            let (c, d) = (c.clone(), deadline(start, i, n).into());
            let jh = local.spawn_local(async move {
                tokio::time::sleep_until(d).await;
                c.set(c.get() + 1)
            });
            if i % 2 == 1 {
                abort.push(jh);
            }
        }
        poll_all(&rt, &local);
        abort.iter().for_each(|jh| jh.abort());
        rt.block_on(local);
    });
    assert!((fired(n)..=n).contains(&c.get()));
    t
}

/// Tasks that each sleep until their deadline, polled once (arming their sleeps, as
/// tokio's are) before half are cancelled: the like-for-like partner of
/// `tokio_timers`.
fn sl_sleep_tasks(n: u64) -> Duration {
    let lp = EventLoop::new().unwrap();
    let s = Rc::new((Cell::new(0u64), lp.clone()));
    let t = timed(|| {
        let start = Instant::now();
        let mut cancel = Vec::with_capacity(n as usize / 2);
        for i in 0..n {
            let (s, d) = (s.clone(), deadline(start, i, n));
            let task = lp
                .create_task(async move {
                    shardloop::time::sleep_until(d).await;
                    s.0.set(s.0.get() + 1);
                    if s.0.get() == fired(n) {
                        s.1.stop()
                    }
                })
                .unwrap();
            if i % 2 == 1 {
                cancel.push(task);
            } else {
                task.detach();
            }
        }
        lp.stop(); // one iteration: every task polled once, its sleep armed
        lp.run_forever().unwrap();
        cancel.iter().for_each(|t| t.cancel());
        lp.run_forever().unwrap();
    });
    assert_eq!(s.0.get(), fired(n));
    t
}

/// tokio-util's timer queue: the structure that does what `call_later` does. Made
/// with `new()`, not `with_capacity`: neither side is told the count in advance.
fn delay_queue_timers(n: u64) -> Duration {
    let rt = tokio_rt();
    timed(|| {
        rt.block_on(async {
            let start = Instant::now();
            let mut q = tokio_util::time::DelayQueue::new();
            let mut cancel = Vec::with_capacity(n as usize / 2);
            for i in 0..n {
                let key = q.insert_at(i, deadline(start, i, n).into());
                if i % 2 == 1 {
                    cancel.push(key);
                }
            }
            for k in &cancel {
                q.remove(k);
            }
            let mut count = 0;
            while std::future::poll_fn(|cx| q.poll_expired(cx))
                .await
                .is_some()
            {
                count += 1;
            }
            assert_eq!(count, fired(n));
        })
    })
}

// ---------------------------------------------------------------- 6. memory

fn mem_in_child(case: &str) -> Option<f64> {
    let out = Command::new(env::current_exe().ok()?)
        .env(MEM_ENV, case)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "memory case {case} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let kb: f64 = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

fn status_kb(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with(key));
    line.and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Prints "peak_growth_kb retained_kb" for `work` and exits (skipping the teardown).
fn report_growth(work: impl FnOnce()) -> ! {
    let before = status_kb("VmRSS:");
    work();
    let (hwm, rss) = (status_kb("VmHWM:"), status_kb("VmRSS:"));
    if hwm == 0 {
        std::process::exit(1); // no /proc: reported as n/a
    }
    println!(
        "{} {}",
        hwm.saturating_sub(before),
        rss.saturating_sub(before)
    );
    std::process::exit(0)
}

fn mem_child(case: &str, n: u64) -> ! {
    match case {
        "sl_timers" => {
            let lp = EventLoop::new().unwrap();
            report_growth(|| {
                for _ in 0..n {
                    let _pending = lp.call_later(FAR, || ()).unwrap();
                }
            })
        }
        "sl_tasks" => {
            let lp = EventLoop::new().unwrap();
            report_growth(|| {
                for _ in 0..n {
                    let _detached = lp.create_task(std::future::pending::<()>()).unwrap();
                }
                lp.stop(); // one iteration: every task polled once
                lp.run_forever().unwrap();
            })
        }
        "tokio_sleep" | "tokio_tasks" => {
            let (rt, local) = (tokio_rt(), LocalSet::new());
            report_growth(|| {
                for _ in 0..n {
                    if case == "tokio_sleep" {
                        local.spawn_local(async { tokio::time::sleep(FAR).await });
                    } else {
                        local.spawn_local(std::future::pending::<()>());
                    }
                }
                poll_all(&rt, &local);
            })
        }
        _ => panic!("unknown {MEM_ENV} {case}"),
    }
}

// ---------------------------------------------------------------- asyncio

/// Runs bench/asyncio_bench.py; returns its (key, median seconds) pairs, or nothing.
fn run_asyncio() -> Vec<(String, f64)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/asyncio_bench.py");
    eprintln!("running {} ...", script.display());
    let scale = env::var("COMPARE_SCALE").unwrap_or_else(|_| "1.0".into());
    let out = match Command::new("python3")
        .arg(&script)
        .env("COMPARE_SCALE", scale)
        .output()
    {
        Ok(out) if out.status.success() => out,
        Ok(out) => {
            eprintln!(
                "asyncio bench failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return Vec::new();
        }
        Err(e) => {
            eprintln!("python3 not available ({e}): skipping the asyncio column");
            return Vec::new();
        }
    };
    // The last stdout line is a flat JSON object {"key": seconds, ...}.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = stdout
        .lines()
        .last()
        .unwrap_or("")
        .trim()
        .trim_matches(['{', '}']);
    json.split(',')
        .filter_map(|kv| {
            let (k, v) = kv.split_once(':')?;
            Some((
                k.trim().trim_matches('"').to_string(),
                v.trim().parse().ok()?,
            ))
        })
        .collect()
}
