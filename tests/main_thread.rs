//! Main-thread-only behaviour of the current-loop functions (API.md section 2).
//!
//! This is a `harness = false` test: `main` runs on the process's main thread, which is
//! what these checks need (libtest runs tests on worker threads). The checks share the
//! main thread's state, so they run in this fixed order.

#[path = "support/harness.rs"]
mod harness;

use std::cell::Cell;
use std::process::ExitCode;
use std::rc::Rc;
use std::thread;
use std::time::Duration;

use shardloop::{Error, EventLoop};

/// Hang detector, not a timing assertion.
const HANG_LIMIT: Duration = Duration::from_secs(60);

/// Whether `a` and `b` are the same loop: a callback scheduled on `a` runs when `b` runs
/// one iteration.
fn same_loop(a: &EventLoop, b: &EventLoop) -> bool {
    let ran = Rc::new(Cell::new(false));
    let r = Rc::clone(&ran);
    let h = a.call_soon(move || r.set(true)).expect("call_soon");
    b.stop();
    b.run_forever().expect("run_forever after stop");
    h.cancel();
    ran.get()
}

fn default_loop_is_created_on_the_main_thread() {
    let first = shardloop::get_event_loop().expect("main thread gets a default loop");
    assert!(!first.is_closed());
    assert!(!first.is_running());
    let second = shardloop::get_event_loop().expect("second get_event_loop()");
    assert!(
        same_loop(&first, &second),
        "get_event_loop() returns the same default loop every time"
    );
}

fn new_event_loop_does_not_replace_the_current_loop() {
    let current = shardloop::get_event_loop().unwrap();
    let fresh = shardloop::new_event_loop().unwrap();
    let again = shardloop::get_event_loop().unwrap();
    assert!(same_loop(&current, &again));
    assert!(
        !same_loop(&fresh, &again),
        "new_event_loop() does not make the loop current"
    );
    fresh.close().unwrap();
}

fn the_running_loop_takes_precedence() {
    let other = shardloop::new_event_loop().unwrap();
    let is_other = other
        .run_until_complete(async {
            let got = shardloop::get_event_loop().expect("get_event_loop in a running loop");
            // `got` is running, so it is `other` (the default loop is not running).
            got.is_running()
        })
        .unwrap();
    assert!(is_other, "get_event_loop() returns the running loop first");
    other.close().unwrap();
}

fn set_event_loop_none_makes_get_event_loop_fail() {
    shardloop::set_event_loop(None);
    match shardloop::get_event_loop() {
        Err(Error::NoCurrentLoop { thread }) => {
            assert!(!thread.is_empty(), "NoCurrentLoop names the thread")
        }
        Err(other) => panic!("expected NoCurrentLoop, got {other:?}"),
        Ok(_) => panic!("after set_event_loop(None) the main thread has no current loop"),
    }
    // And it stays that way: no new default loop is created behind the user's back.
    assert!(matches!(
        shardloop::get_event_loop(),
        Err(Error::NoCurrentLoop { .. })
    ));
}

fn set_event_loop_some_restores_a_current_loop() {
    let lp = shardloop::new_event_loop().unwrap();
    shardloop::set_event_loop(Some(lp.clone()));
    let got = shardloop::get_event_loop().expect("after set_event_loop(Some)");
    assert!(same_loop(&got, &lp));
    shardloop::set_event_loop(None);
    lp.close().unwrap();
}

fn run_works_on_the_main_thread() {
    assert_eq!(shardloop::run(async { 5u32 }).unwrap(), 5);
    assert!(matches!(
        shardloop::get_running_loop(),
        Err(Error::NoRunningLoop)
    ));
}

fn main() -> ExitCode {
    // Fail instead of hanging if a loop never returns.
    thread::spawn(|| {
        thread::sleep(HANG_LIMIT);
        eprintln!("main_thread: hung for more than {HANG_LIMIT:?}");
        std::process::exit(101);
    });

    let checks: &[(&str, fn())] = &[
        (
            "default_loop_is_created_on_the_main_thread",
            default_loop_is_created_on_the_main_thread,
        ),
        (
            "new_event_loop_does_not_replace_the_current_loop",
            new_event_loop_does_not_replace_the_current_loop,
        ),
        (
            "the_running_loop_takes_precedence",
            the_running_loop_takes_precedence,
        ),
        (
            "set_event_loop_none_makes_get_event_loop_fail",
            set_event_loop_none_makes_get_event_loop_fail,
        ),
        (
            "set_event_loop_some_restores_a_current_loop",
            set_event_loop_some_restores_a_current_loop,
        ),
        ("run_works_on_the_main_thread", run_works_on_the_main_thread),
    ];

    harness::run_checks("main-thread", checks)
}
