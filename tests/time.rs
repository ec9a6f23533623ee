//! Timer futures: `sleep`, `timeout`, `interval` (API.md section 4).
//!
//! No timing assertions but "never early": the machine is shared and noisy, so how
//! late something fires is never checked here (the benchmarks measure it).

use std::cell::Cell;
use std::pin::pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use shardloop::time::{interval, interval_at, sleep, sleep_until, timeout, timeout_at};
use shardloop::Error;

/// Sets its flag when dropped.
struct DropFlag(Rc<Cell<bool>>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

/// Whether `later - earlier` is a whole number of `period`s.
fn whole_periods(earlier: Instant, later: Instant, period: Duration) -> Option<u128> {
    let d = later.checked_duration_since(earlier)?.as_nanos();
    (d % period.as_nanos() == 0).then_some(d / period.as_nanos())
}

#[test]
fn sleep_is_never_early() {
    shardloop::run(async {
        for us in [0, 1, 100, 500, 999, 1000, 1500, 2500] {
            let d = Duration::from_micros(us);
            let start = Instant::now();
            sleep(d).await;
            assert!(start.elapsed() >= d, "sleep({d:?}) returned early");
            let deadline = Instant::now() + d;
            sleep_until(deadline).await;
            assert!(Instant::now() >= deadline, "sleep_until returned early");
        }
    })
    .unwrap();
}

#[test]
fn timeout_gives_the_output_when_the_future_wins() {
    let out = shardloop::run(async {
        timeout(Duration::from_secs(30), async {
            sleep(Duration::from_millis(1)).await;
            7
        })
        .await
    })
    .unwrap();
    assert_eq!(out.unwrap(), 7);
}

#[test]
fn a_ready_output_wins_over_an_expired_deadline() {
    let out = shardloop::run(async { timeout(Duration::ZERO, async { "done" }).await }).unwrap();
    assert_eq!(out.unwrap(), "done");
}

#[test]
fn timeout_expires_never_early_and_drops_the_inner_future_at_once() {
    shardloop::run(async {
        let dropped = Rc::new(Cell::new(false));
        let guard = DropFlag(dropped.clone());
        let limit = Duration::from_millis(5);
        let start = Instant::now();
        let mut t = pin!(timeout(limit, async move {
            let _guard = guard;
            sleep(Duration::from_secs(3600)).await;
        }));
        let out = t.as_mut().await;
        assert!(matches!(out, Err(Error::Timeout)), "got {out:?}");
        assert!(start.elapsed() >= limit, "timed out early");
        // Dropped on expiry, while the Timeout itself is still alive.
        assert!(dropped.get(), "the inner future was not dropped on expiry");
    })
    .unwrap();
}

#[test]
fn timeout_at_a_past_deadline_expires_a_pending_future() {
    let out =
        shardloop::run(async { timeout_at(Instant::now(), std::future::pending::<()>()).await })
            .unwrap();
    assert!(matches!(out, Err(Error::Timeout)));
}

#[test]
fn timeouts_nest_and_the_inner_one_fires_first() {
    shardloop::run(async {
        let outer = timeout(Duration::from_secs(30), async {
            timeout(Duration::from_millis(2), sleep(Duration::from_secs(3600))).await
        })
        .await;
        assert!(matches!(outer, Ok(Err(Error::Timeout))), "got {outer:?}");
    })
    .unwrap();
}

#[test]
fn interval_ticks_at_once_then_on_whole_periods_never_early() {
    shardloop::run(async {
        let period = Duration::from_millis(3);
        let before = Instant::now();
        let mut iv = interval(period);
        let first = iv.tick().await;
        assert!(
            first >= before && first <= Instant::now(),
            "the first tick is at once"
        );
        let mut last = first;
        for _ in 0..5 {
            let t = iv.tick().await;
            assert!(Instant::now() >= t, "a tick came early");
            assert!(t > last);
            assert!(
                whole_periods(first, t, period).is_some(),
                "ticks stay on the grid of the first one"
            );
            last = t;
        }
    })
    .unwrap();
}

#[test]
fn interval_skips_missed_ticks_after_a_stall_instead_of_bursting() {
    shardloop::run(async {
        let period = Duration::from_millis(20);
        let start = Instant::now();
        let mut iv = interval_at(start, period);
        assert_eq!(iv.tick().await, start);
        // Block the loop's thread for 3.5 periods while the next tick is pending.
        let lp = shardloop::get_running_loop().unwrap();
        let stall_end = std::rc::Rc::new(std::cell::Cell::new(start));
        let end = stall_end.clone();
        lp.call_soon(move || {
            std::thread::sleep(period * 7 / 2);
            end.set(Instant::now());
        })
        .unwrap();
        let late = iv.tick().await;
        let after_stall = stall_end.get();
        assert_eq!(
            late,
            start + period,
            "the tick that was due comes once, late"
        );
        assert!(after_stall >= start + period * 7 / 2);

        // The next one is not start + 2 periods (a burst) but the first multiple of
        // the period after the stall.
        let next = iv.tick().await;
        assert!(Instant::now() >= next, "never early");
        let k = whole_periods(start, next, period).expect("on the period grid");
        assert!(
            k >= 4,
            "missed ticks were burst: tick {k} came after the stall"
        );
        // Scheduled when the late tick completed, after the stall had ended (not
        // read from the clock here, which a descheduled thread reads late).
        assert!(
            next > after_stall,
            "the tick after a stall is in the future"
        );
        let then = iv.tick().await;
        assert!(then > next && whole_periods(next, then, period).is_some());
    })
    .unwrap();
}

#[test]
fn interval_reset_restarts_the_schedule() {
    shardloop::run(async {
        let period = Duration::from_millis(4);
        let mut iv = interval(period);
        iv.tick().await;
        let reset_at = Instant::now();
        iv.reset();
        let t = iv.tick().await;
        assert!(
            t >= reset_at + period,
            "after reset the next tick is a period away"
        );
        assert!(Instant::now() >= t);
        assert_eq!(iv.period(), period);
    })
    .unwrap();
}

#[test]
fn dropping_a_tick_future_loses_no_tick() {
    shardloop::run(async {
        let period = Duration::from_millis(2);
        let start = Instant::now();
        let mut iv = interval_at(start, period);
        iv.tick().await;
        let before = Instant::now();
        // Abandon a tick halfway: the schedule is unchanged, so whichever call
        // completes it, the tick is the first one of the schedule due after the
        // first tick completed (`start + period`, unless this thread stalled past
        // it: missed ticks are skipped), not one after that.
        let t = match timeout(Duration::from_micros(100), iv.tick()).await {
            Ok(t) => t,
            Err(_) => iv.tick().await,
        };
        assert_eq!(
            (t - start).as_nanos() % period.as_nanos(),
            0,
            "on the schedule"
        );
        assert!(t > start && t <= before + period, "no tick was lost");
    })
    .unwrap();
}

#[test]
#[should_panic(expected = "period must be non-zero")]
fn a_zero_period_is_refused() {
    let _ = interval(Duration::ZERO);
}
