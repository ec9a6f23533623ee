//! Blocking offload and timer lateness, shardloop against tokio (issue 3's benchmarks).
//!
//! Wired into `benches/compare.rs` with `#[path = "compare/exec.rs"] mod exec;`:
//! - `sl_run_in_executor`, `tokio_spawn_blocking` and `tokio_spawn_blocking_capped`
//!   have the `Contender` shape (`fn(u64) -> Duration`): N tiny jobs handed to the
//!   blocking pool from a current-thread loop, all results awaited.
//! - `lateness_rows` measures `sleep(1ms)` lateness (median and p99) for both and
//!   returns table rows in `print_table`'s seven columns.

use std::time::{Duration, Instant};

use shardloop::EventLoop;

/// The job count the bar names (100k tiny jobs).
pub const EXECUTOR_JOBS: f64 = 1e5;
/// Sequential `sleep(1ms)` samples per contender.
pub const SLEEP_SAMPLES: f64 = 2e3;
const SLEEP: Duration = Duration::from_millis(1);

fn job(i: u64) -> u64 {
    i.wrapping_mul(2_654_435_761) >> 7
}

fn expected(n: u64) -> u64 {
    (0..n).map(job).fold(0, u64::wrapping_add)
}

/// `run_in_executor` of `n` tiny jobs from one loop, then every result awaited.
pub fn sl_run_in_executor(n: u64) -> Duration {
    let lp = EventLoop::new().unwrap();
    let start = Instant::now();
    let sum = lp
        .run_until_complete({
            let lp = lp.clone();
            async move {
                let jobs: Vec<_> = (0..n).map(|i| lp.run_in_executor(move || job(i))).collect();
                let mut sum = 0u64;
                for j in jobs {
                    sum = sum.wrapping_add(j.await.unwrap());
                }
                sum
            }
        })
        .unwrap();
    let took = start.elapsed();
    assert_eq!(sum, expected(n));
    lp.close().unwrap();
    took
}

fn tokio_blocking(n: u64, max_blocking: Option<usize>) -> Duration {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_all();
    if let Some(max) = max_blocking {
        builder.max_blocking_threads(max);
    }
    let rt = builder.build().unwrap();
    let start = Instant::now();
    let sum = rt.block_on(async {
        let jobs: Vec<_> = (0..n)
            .map(|i| tokio::task::spawn_blocking(move || job(i)))
            .collect();
        let mut sum = 0u64;
        for j in jobs {
            sum = sum.wrapping_add(j.await.unwrap());
        }
        sum
    });
    let took = start.elapsed();
    assert_eq!(sum, expected(n));
    took
}

/// tokio `spawn_blocking` with its default pool (up to 512 threads).
pub fn tokio_spawn_blocking(n: u64) -> Duration {
    tokio_blocking(n, None)
}

/// tokio `spawn_blocking` capped at shardloop's bound, `min(32, cpus + 4)` threads.
pub fn tokio_spawn_blocking_capped(n: u64) -> Duration {
    // The bound API.md documents for run_in_executor's default pool.
    let cap = (num_cpus::get() + 4).min(32);
    tokio_blocking(n, Some(cap))
}

/// Median and 99th percentile of how late `sleep(1ms)` completed.
#[derive(Clone, Copy, Debug)]
pub struct Lateness {
    /// The median lateness.
    pub median: Duration,
    /// The 99th percentile.
    pub p99: Duration,
}

fn lateness(mut late: Vec<Duration>) -> Lateness {
    late.sort_unstable();
    let at = |q: f64| late[((late.len() - 1) as f64 * q).round() as usize];
    Lateness {
        median: at(0.5),
        p99: at(0.99),
    }
}

/// `samples` sequential `shardloop::time::sleep(1ms)` on an otherwise idle loop.
pub fn sl_sleep_lateness(samples: u64) -> Lateness {
    let lp = EventLoop::new().unwrap();
    let late = lp
        .run_until_complete(async move {
            let mut late = Vec::with_capacity(samples as usize);
            for _ in 0..samples {
                let t = Instant::now();
                shardloop::time::sleep(SLEEP).await;
                let took = t.elapsed();
                assert!(took >= SLEEP, "sleep returned early");
                late.push(took - SLEEP);
            }
            late
        })
        .unwrap();
    lp.close().unwrap();
    lateness(late)
}

/// `samples` sequential `tokio::time::sleep(1ms)` on a current-thread runtime.
pub fn tokio_sleep_lateness(samples: u64) -> Lateness {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let late = rt.block_on(async move {
        let mut late = Vec::with_capacity(samples as usize);
        for _ in 0..samples {
            let t = Instant::now();
            tokio::time::sleep(SLEEP).await;
            late.push(t.elapsed().saturating_sub(SLEEP));
        }
        late
    });
    lateness(late)
}

fn us(d: Duration) -> String {
    format!("{:.1} us", d.as_secs_f64() * 1e6)
}

/// Rows for `print_table`: sleep(1ms) lateness, median and p99, shardloop vs tokio.
/// The ratio column is tokio / shardloop (> 1: shardloop is less late).
pub fn lateness_rows(samples: u64) -> Vec<[String; 7]> {
    let ours = sl_sleep_lateness(samples);
    let theirs = tokio_sleep_lateness(samples);
    let ratio =
        |t: Duration, o: Duration| format!("{:.2}x", t.as_secs_f64() / o.as_secs_f64().max(1e-9));
    vec![
        [
            format!("sleep(1ms) lateness, median (N={samples})"),
            "tokio sleep".into(),
            us(ours.median),
            us(theirs.median),
            ratio(theirs.median, ours.median),
            String::new(),
            String::new(),
        ],
        [
            format!("sleep(1ms) lateness, p99 (N={samples})"),
            "tokio sleep".into(),
            us(ours.p99),
            us(theirs.p99),
            ratio(theirs.p99, ours.p99),
            String::new(),
            String::new(),
        ],
    ]
}
