//! Loops that spin before parking (`spin_before_park`): mail from other threads ends
//! the spin, a timer's deadline bounds it, and shards keep exact results.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use shardloop::{EventLoop, Runtime};

/// A window so long that a spin which ignored a deadline or mail would hang the test.
const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn a_timer_deadline_bounds_the_spin() {
    let lp = EventLoop::builder().spin_before_park(HOUR).build().unwrap();
    let fired_at = Rc::new(Cell::new(None));
    let deadline = lp.time() + Duration::from_millis(5);
    let (seen, stopper) = (fired_at.clone(), lp.clone());
    lp.call_at(deadline, move || {
        seen.set(Some(Instant::now()));
        stopper.stop();
    })
    .unwrap();
    lp.run_forever().unwrap();
    assert!(fired_at.get().unwrap() >= deadline, "never early");
}

#[test]
fn mail_from_other_threads_ends_the_spin() {
    let lp = EventLoop::builder().spin_before_park(HOUR).build().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let handle = lp.handle();
    let c = count.clone();
    let sender = thread::spawn(move || {
        for _ in 0..1000 {
            let c = c.clone();
            handle
                .call_soon_threadsafe(move || {
                    c.fetch_add(1, Ordering::Relaxed);
                })
                .unwrap();
        }
        handle.stop();
    });
    lp.run_forever().unwrap();
    sender.join().unwrap();
    // The stop came after every call, from the same thread: all of them ran.
    assert_eq!(count.load(Ordering::Relaxed), 1000);
}

#[test]
fn spinning_shards_answer_every_round_trip() {
    let rt = Runtime::builder()
        .shards(2)
        .spin_before_park(Duration::from_millis(1))
        .build()
        .unwrap();
    let to = rt.shard(1).clone();
    let sum = rt
        .submit_to(0, move || async move {
            let mut sum = 0u64;
            for i in 0..2000u64 {
                sum += to.submit(move || async move { i }).await.unwrap();
            }
            sum
        })
        .wait()
        .unwrap();
    assert_eq!(sum, 2000 * 1999 / 2);
    rt.shutdown(Duration::from_secs(1)).unwrap();
}
