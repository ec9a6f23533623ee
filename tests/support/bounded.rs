//! Running a test body on a loop, bounded: a body that has not finished after
//! [`HANG_LIMIT`] stops the loop and fails the test instead of hanging the suite (a
//! lost wakeup would otherwise hang forever). A hang detector, never a timing
//! under test.

use std::future::Future;
use std::time::Duration;

use shardloop::EventLoop;

/// How long a test body may run before it counts as hung.
pub const HANG_LIMIT: Duration = Duration::from_secs(60);

/// Runs `fut` on a fresh loop made current for it, bounded by [`HANG_LIMIT`].
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let lp = shardloop::new_event_loop().unwrap();
    shardloop::set_event_loop(Some(lp.clone()));
    let out = run_bounded(&lp, fut);
    shardloop::set_event_loop(None);
    lp.close().unwrap();
    out
}

/// Runs `fut` on `lp`, bounded by [`HANG_LIMIT`].
pub fn run_bounded<F: Future>(lp: &EventLoop, fut: F) -> F::Output {
    let stopper = lp.clone();
    let guard = lp.call_later(HANG_LIMIT, move || stopper.stop()).unwrap();
    let out = lp
        .run_until_complete(fut)
        .expect("the test did not finish: a wakeup was lost or an operation hung");
    guard.cancel();
    out
}
