//! A tiny runner for `harness = false` tests, whose checks must run on the process's
//! main thread (libtest would run them on worker threads). Prints libtest-style lines
//! so that CI reads the result.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::ExitCode;

/// Runs every check in order; a panicking check fails. Returns the exit code.
pub fn run_checks(what: &str, checks: &[(&str, fn())]) -> ExitCode {
    println!("\nrunning {} {what} checks", checks.len());
    let mut failed = Vec::new();
    for (name, check) in checks {
        match catch_unwind(AssertUnwindSafe(check)) {
            Ok(()) => println!("test {name} ... ok"),
            Err(_) => {
                println!("test {name} ... FAILED");
                failed.push(*name);
            }
        }
    }
    if failed.is_empty() {
        println!("\ntest result: ok. {} passed; 0 failed\n", checks.len());
        ExitCode::SUCCESS
    } else {
        println!(
            "\ntest result: FAILED. {} passed; {} failed: {failed:?}\n",
            checks.len() - failed.len(),
            failed.len()
        );
        ExitCode::FAILURE
    }
}
