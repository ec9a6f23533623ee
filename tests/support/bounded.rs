//! Running a test body on a loop without ever hanging the suite: `block_on` fails the
//! test if the body has not finished after HANG_LIMIT (a lost wakeup would otherwise
//! hang forever). A limit, never a timing assertion: the bodies finish far sooner.

use std::future::Future;
use std::time::Duration;

use shardloop::EventLoop;

/// How long a test body may run before it counts as hung.
pub const HANG_LIMIT: Duration = Duration::from_secs(60);

/// Runs `fut` on a fresh loop made current for it, then closes the loop.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let lp = shardloop::new_event_loop().unwrap();
    shardloop::set_event_loop(Some(lp.clone()));
    let out = run_bounded(&lp, fut);
    shardloop::set_event_loop(None);
    lp.close().unwrap();
    out
}

/// Runs `fut` on `lp`; panics if it does not finish within HANG_LIMIT.
pub fn run_bounded<F: Future>(lp: &EventLoop, fut: F) -> F::Output {
    let stopper = lp.clone();
    let guard = lp.call_later(HANG_LIMIT, move || stopper.stop()).unwrap();
    let out = lp
        .run_until_complete(fut)
        .expect("the test did not finish: a wakeup was lost or an operation hung");
    guard.cancel();
    out
}
