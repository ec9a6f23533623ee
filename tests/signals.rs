//! Signal handlers on the main thread's loop (API.md section 4).
//!
//! A `harness = false` test: `main` runs on the process's main thread, which signal
//! handlers need (libtest runs tests on worker threads). The checks share the
//! process's signal state, so they run one after another, in this order. Each check
//! raises only signals that have a handler at that moment (or are ignored by
//! default), so a mistake fails a check instead of killing the run; the one check
//! that needs a signal's default action (termination) runs it in a child process.

#[path = "support/harness.rs"]
mod harness;

use std::cell::{Cell, RefCell};
use std::process::{Command, ExitCode};
use std::rc::Rc;
use std::thread;
use std::time::Duration;

use shardloop::{Error, EventLoop};

/// Hang detector, not a timing assertion.
const HANG_LIMIT: Duration = Duration::from_secs(60);
/// Set in the child process of `removing_a_handler_restores_the_default_action`.
const CHILD_ENV: &str = "SHARDLOOP_SIGNALS_CHILD";

/// Sends `sig` to this thread; it is delivered before this returns.
fn raise(sig: i32) {
    // SAFETY: raise has no memory-safety preconditions; the signals raised here have a
    // handler installed by the check, or a default action of "ignore".
    let rc = unsafe { libc::raise(sig) };
    assert_eq!(rc, 0, "raise({sig})");
}

/// Sends `sig` to the whole process, from whichever thread calls it.
fn kill_self(sig: i32) {
    // SAFETY: as for `raise`; getpid cannot fail.
    let rc = unsafe { libc::kill(libc::getpid(), sig) };
    assert_eq!(rc, 0, "kill(getpid(), {sig})");
}

/// Runs `lp` until a callback stops it; fails instead of hanging.
fn run_bounded(lp: &EventLoop) {
    let stopper = lp.clone();
    let guard = lp
        .call_later(HANG_LIMIT / 2, move || {
            stopper.stop();
            panic!("the loop was not stopped by a signal handler");
        })
        .unwrap();
    lp.run_forever().unwrap();
    guard.cancel();
}

fn a_raised_signal_runs_its_handler_as_a_loop_callback() {
    let lp = shardloop::new_event_loop().unwrap();
    let seen = Rc::new(Cell::new(0));
    let (s, stopper) = (seen.clone(), lp.clone());
    lp.add_signal_handler(libc::SIGUSR1, move || {
        // An ordinary callback: on the loop's thread, with the loop running, free to
        // call back into it.
        assert!(stopper.is_running());
        assert!(shardloop::get_running_loop().is_ok());
        s.set(s.get() + 1);
        stopper
            .call_soon({
                let stopper = stopper.clone();
                move || stopper.stop()
            })
            .unwrap();
    })
    .unwrap();
    lp.call_soon(|| raise(libc::SIGUSR1)).unwrap();
    run_bounded(&lp);
    assert_eq!(seen.get(), 1);
    assert!(lp.remove_signal_handler(libc::SIGUSR1));
    lp.close().unwrap();
}

fn signals_from_another_thread_reach_several_handlers() {
    let lp = shardloop::new_event_loop().unwrap();
    let seen = Rc::new(RefCell::new(Vec::new()));
    for sig in [libc::SIGUSR1, libc::SIGUSR2] {
        let (seen, stopper) = (seen.clone(), lp.clone());
        lp.add_signal_handler(sig, move || {
            seen.borrow_mut().push(sig);
            if seen.borrow().len() == 2 {
                stopper.stop();
            }
        })
        .unwrap();
    }
    let sender = thread::spawn(|| {
        kill_self(libc::SIGUSR1);
        kill_self(libc::SIGUSR2);
    });
    run_bounded(&lp);
    sender.join().unwrap();
    let mut seen = seen.borrow().clone();
    seen.sort_unstable();
    assert_eq!(seen, [libc::SIGUSR1, libc::SIGUSR2]);
    assert!(lp.remove_signal_handler(libc::SIGUSR1));
    assert!(lp.remove_signal_handler(libc::SIGUSR2));
    lp.close().unwrap();
}

fn adding_again_replaces_the_handler() {
    let lp = shardloop::new_event_loop().unwrap();
    let calls = Rc::new(RefCell::new(Vec::new()));
    let first = calls.clone();
    lp.add_signal_handler(libc::SIGUSR2, move || first.borrow_mut().push("first"))
        .unwrap();
    let (second, stopper) = (calls.clone(), lp.clone());
    lp.add_signal_handler(libc::SIGUSR2, move || {
        second.borrow_mut().push("second");
        stopper.stop();
    })
    .unwrap();
    lp.call_soon(|| raise(libc::SIGUSR2)).unwrap();
    run_bounded(&lp);
    assert_eq!(*calls.borrow(), ["second"]);
    assert!(lp.remove_signal_handler(libc::SIGUSR2));
    lp.close().unwrap();
}

fn a_removed_handler_no_longer_runs() {
    // SIGWINCH is ignored by default, so raising it with no handler is harmless.
    let lp = shardloop::new_event_loop().unwrap();
    let calls = Rc::new(Cell::new(0));
    let c = calls.clone();
    lp.add_signal_handler(libc::SIGWINCH, move || c.set(c.get() + 1))
        .unwrap();
    assert!(lp.remove_signal_handler(libc::SIGWINCH));
    assert!(!lp.remove_signal_handler(libc::SIGWINCH), "already removed");
    assert!(!lp.remove_signal_handler(libc::SIGUSR1), "never added");
    lp.call_soon(|| raise(libc::SIGWINCH)).unwrap();
    // The signal is raised synchronously: had a handler been left, its wakeup byte
    // would be there by the next poll. A few iterations are plenty.
    let stopper = lp.clone();
    lp.call_later(Duration::from_millis(20), move || stopper.stop())
        .unwrap();
    lp.run_forever().unwrap();
    assert_eq!(calls.get(), 0);
    lp.close().unwrap();
}

/// In the child: handle SIGUSR1, remove the handler, raise it. Its default action
/// ends the process, as asyncio's restored SIG_DFL would.
fn child_removes_then_raises() -> ExitCode {
    let lp = shardloop::new_event_loop().unwrap();
    lp.add_signal_handler(libc::SIGUSR1, || ()).unwrap();
    assert!(lp.remove_signal_handler(libc::SIGUSR1));
    raise(libc::SIGUSR1);
    thread::sleep(Duration::from_millis(100));
    println!("still alive after SIGUSR1");
    ExitCode::SUCCESS
}

fn removing_a_handler_restores_the_default_action() {
    use std::os::unix::process::ExitStatusExt;
    let out = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGUSR1),
        "the child should be killed by SIGUSR1; it ended with {:?}, stdout {:?}, stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn a_worker_thread_loop_gets_not_main_thread() {
    let got = thread::spawn(|| {
        let lp = shardloop::new_event_loop().unwrap();
        let got = lp.add_signal_handler(libc::SIGUSR1, || ());
        let removed = lp.remove_signal_handler(libc::SIGUSR1);
        (
            format!("{got:?}"),
            matches!(got, Err(Error::NotMainThread)),
            removed,
        )
    })
    .join()
    .unwrap();
    assert!(got.1, "expected NotMainThread, got {}", got.0);
    assert!(!got.2);
}

fn uncatchable_and_out_of_range_signals_are_invalid() {
    let lp = shardloop::new_event_loop().unwrap();
    for sig in [libc::SIGKILL, libc::SIGSTOP, libc::SIGSEGV, 0, -1, 1000] {
        match lp.add_signal_handler(sig, || ()) {
            Err(Error::InvalidSignal) => {}
            other => panic!("signal {sig}: expected InvalidSignal, got {other:?}"),
        }
        assert!(!lp.remove_signal_handler(sig));
    }
    lp.close().unwrap();
}

fn a_closed_loop_refuses_handlers_and_close_removes_them() {
    let lp = shardloop::new_event_loop().unwrap();
    lp.add_signal_handler(libc::SIGUSR2, || ()).unwrap();
    lp.close().unwrap();
    assert!(!lp.remove_signal_handler(libc::SIGUSR2), "close removed it");
    assert!(matches!(
        lp.add_signal_handler(libc::SIGUSR2, || ()),
        Err(Error::Closed)
    ));
    // Another loop can take the signal over afterwards.
    let other = shardloop::new_event_loop().unwrap();
    let stopper = other.clone();
    other
        .add_signal_handler(libc::SIGUSR2, move || stopper.stop())
        .unwrap();
    other.call_soon(|| raise(libc::SIGUSR2)).unwrap();
    run_bounded(&other);
    other.close().unwrap();
}

fn main() -> ExitCode {
    if std::env::var_os(CHILD_ENV).is_some() {
        return child_removes_then_raises();
    }
    // Fail instead of hanging if a loop never returns.
    thread::spawn(|| {
        thread::sleep(HANG_LIMIT);
        eprintln!("signals: hung for more than {HANG_LIMIT:?}");
        std::process::exit(101);
    });

    let checks: &[(&str, fn())] = &[
        (
            "a_raised_signal_runs_its_handler_as_a_loop_callback",
            a_raised_signal_runs_its_handler_as_a_loop_callback,
        ),
        (
            "signals_from_another_thread_reach_several_handlers",
            signals_from_another_thread_reach_several_handlers,
        ),
        (
            "adding_again_replaces_the_handler",
            adding_again_replaces_the_handler,
        ),
        (
            "a_removed_handler_no_longer_runs",
            a_removed_handler_no_longer_runs,
        ),
        (
            "removing_a_handler_restores_the_default_action",
            removing_a_handler_restores_the_default_action,
        ),
        (
            "a_worker_thread_loop_gets_not_main_thread",
            a_worker_thread_loop_gets_not_main_thread,
        ),
        (
            "uncatchable_and_out_of_range_signals_are_invalid",
            uncatchable_and_out_of_range_signals_are_invalid,
        ),
        (
            "a_closed_loop_refuses_handlers_and_close_removes_them",
            a_closed_loop_refuses_handlers_and_close_removes_them,
        ),
    ];

    harness::run_checks("signal", checks)
}
