//! Child processes on the loop (API.md section 7, `shardloop::process`), mirroring
//! CPython's `test_asyncio/test_subprocess.py`: output and exit codes, pipes both
//! ways, large output on both pipes at once, signals, kill on drop and reaping of
//! dropped children, children on worker-thread loops and on two loops at once, and
//! the errors (no such program, no loop, a closed stdin, a child gone away).
//!
//! Every test body runs under `block_on`, which fails the test instead of hanging
//! the suite if the body has not finished after HANG_LIMIT. No test asserts how long
//! anything takes; waiting for the system (a pid to disappear) is a bounded loop.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use futures_util::{AsyncReadExt, AsyncWriteExt};
use shardloop::process::Command;

#[path = "support/bounded.rs"]
mod bounded;
use bounded::{block_on, run_bounded};

/// Whether `pid` is gone from the process table: exited *and* reaped (a zombie
/// still has its /proc entry).
fn reaped(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// Polls until `pid` has been reaped, letting the loop run in between; false if it
/// is still there after many tries.
async fn reaped_soon(pid: u32) -> bool {
    for _ in 0..3000 {
        if reaped(pid) {
            return true;
        }
        shardloop::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

// test_shell and test_communicate: a shell's output, captured.
#[test]
fn output_captures_stdout_and_status() {
    block_on(async {
        let out = Command::new("sh").arg("-c").arg("echo hi").output().await?;
        assert!(out.status.success());
        assert_eq!(out.stdout, b"hi\n");
        assert!(out.stderr.is_empty());
        io::Result::Ok(())
    })
    .unwrap();
}

// test_shell: the exit code comes through (there: `exit 7`).
#[test]
fn status_reports_the_exit_code() {
    block_on(async {
        let status = Command::new("sh").args(["-c", "exit 3"]).status().await?;
        assert_eq!(status.code(), Some(3));
        assert!(!status.success());
        let out = Command::new("sh").args(["-c", "exit 7"]).output().await?;
        assert_eq!(out.status.code(), Some(7));
        io::Result::Ok(())
    })
    .unwrap();
}

// test_stdin_stdout: write to cat's stdin, close it, read everything back.
#[test]
fn cat_round_trip_through_piped_stdin_and_stdout() {
    block_on(async {
        let mut child = Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let (mut stdin, mut stdout) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
        // More than a pipe holds, so the write must wait for cat to read.
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let writer = shardloop::spawn({
            let data = data.clone();
            async move {
                stdin.write_all(&data).await?;
                stdin.close().await?;
                // Closed: later writes fail instead of vanishing.
                let again = stdin.write_all(b"late").await.unwrap_err();
                assert_eq!(again.kind(), io::ErrorKind::BrokenPipe);
                io::Result::Ok(())
            }
        });
        let mut back = Vec::new();
        stdout.read_to_end(&mut back).await?;
        writer.await.unwrap()?;
        assert_eq!(back.len(), data.len());
        assert!(back == data, "cat gave back different bytes");
        assert!(child.wait().await?.success());
        io::Result::Ok(())
    })
    .unwrap();
}

// test_communicate (with a lot of output): a child filling both pipes does not
// deadlock, because output() reads both while it waits.
#[test]
fn large_output_on_stdout_and_stderr_at_once() {
    block_on(async {
        // 1 MiB to each stream, interleaved, far more than the two pipes hold.
        let script = "i=0; while [ $i -lt 1024 ]; do \
                      head -c 1024 /dev/zero; head -c 1024 /dev/zero >&2; i=$((i+1)); done";
        let out = Command::new("sh").args(["-c", script]).output().await?;
        assert!(out.status.success());
        assert_eq!(out.stdout.len(), 1024 * 1024);
        assert_eq!(out.stderr.len(), 1024 * 1024);
        assert!(out.stdout.iter().chain(&out.stderr).all(|&b| b == 0));
        io::Result::Ok(())
    })
    .unwrap();
}

// test_kill: SIGKILL, and wait sees the signal.
#[test]
fn kill_is_seen_by_wait_as_signal_9() {
    block_on(async {
        let mut child = Command::new("sleep").arg("1000").spawn()?;
        assert!(child.try_wait()?.is_none());
        child.kill()?;
        let status = child.wait().await?;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert_eq!(status.code(), None);
        io::Result::Ok(())
    })
    .unwrap();
}

// test_terminate and test_send_signal: SIGTERM, and a signal the child handles.
#[test]
fn terminate_and_send_signal() {
    block_on(async {
        let mut child = Command::new("sleep").arg("1000").spawn()?;
        let bad = child.send_signal(-1).unwrap_err();
        assert_eq!(bad.kind(), io::ErrorKind::InvalidInput);
        child.terminate()?;
        assert_eq!(child.wait().await?.signal(), Some(libc::SIGTERM));

        // The child traps SIGUSR1 and exits 5; it says when its trap is set. (Not
        // SIGHUP: under `nohup` it is ignored, the child inherits that, and a shell
        // cannot trap a signal ignored on entry: the test hung under `nohup .ci/run`.)
        let mut child = Command::new("sh")
            .args([
                "-c",
                "trap 'exit 5' USR1; echo ready; while :; do sleep 0.01; done",
            ])
            .stdout(Stdio::piped())
            .spawn()?;
        let mut stdout = child.stdout.take().unwrap();
        let mut ready = [0u8; 6];
        stdout.read_exact(&mut ready).await?;
        assert_eq!(&ready, b"ready\n");
        child.send_signal(libc::SIGUSR1)?;
        assert_eq!(child.wait().await?.code(), Some(5));

        let ignored = child.send_signal(libc::SIGKILL);
        assert!(
            ignored.is_ok(),
            "a reaped child ignores signals: {ignored:?}"
        );
        io::Result::Ok(())
    })
    .unwrap();
}

// test_kill_issue43884 (kill after exit) and wait's repeatability: the status is
// kept, and signalling a reaped child is a no-op, never a signal to a recycled pid.
#[test]
fn wait_twice_gives_the_same_status_and_kill_after_reap_is_ok() {
    block_on(async {
        let mut child = Command::new("sh").args(["-c", "exit 4"]).spawn()?;
        let first = child.wait().await?;
        let second = child.wait().await?;
        assert_eq!(first.code(), Some(4));
        assert_eq!(first, second);
        assert_eq!(child.try_wait()?, Some(first));
        child.kill()?;
        child.start_kill()?;
        assert_eq!(child.wait().await?, first);
        io::Result::Ok(())
    })
    .unwrap();
}

// test_close_kill_running: with kill_on_drop, dropping a running child kills it,
// and it is reaped (no zombie left behind).
#[test]
fn kill_on_drop_kills_and_reaps() {
    block_on(async {
        let child = Command::new("sleep")
            .arg("1000")
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id();
        assert!(!reaped(pid));
        drop(child);
        assert!(
            reaped_soon(pid).await,
            "child {pid} was not killed and reaped"
        );
        io::Result::Ok(())
    })
    .unwrap();
}

// test_close_dont_kill_finished: without kill_on_drop a dropped child runs on, and
// is reaped by the loop once it exits, whether it had exited already or not.
#[test]
fn dropped_children_are_reaped_by_the_loop() {
    block_on(async {
        // Still running when dropped: it finishes its work, then is reaped.
        let dir = std::env::temp_dir().join(format!("shardloop-proc-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let marker = dir.join("ran-on");
        let _ = std::fs::remove_file(&marker);
        let mut child = Command::new("sh")
            .args(["-c", "read line; touch \"$1\""])
            .arg("sh")
            .arg(&marker)
            .stdin(Stdio::piped())
            .spawn()?;
        let running = child.id();
        let mut stdin = child.stdin.take().unwrap();
        drop(child);
        assert!(!reaped(running), "dropping must not kill it");
        stdin.write_all(b"go\n").await?;
        drop(stdin);
        assert!(
            reaped_soon(running).await,
            "child {running} stayed a zombie"
        );
        assert!(
            marker.exists(),
            "the dropped child was stopped before it finished"
        );
        std::fs::remove_dir_all(&dir)?;

        // Exited before it was dropped: a zombie until the drop reaps it.
        let done = Command::new("true").spawn()?;
        let pid = done.id();
        let mut zombie = false;
        for _ in 0..3000 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
            if stat.contains(") Z ") {
                zombie = true;
                break;
            }
            shardloop::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(zombie, "`true` did not exit");
        drop(done);
        assert!(reaped_soon(pid).await, "child {pid} stayed a zombie");
        io::Result::Ok(())
    })
    .unwrap();
}

// The loop closes while a dropped child still runs: it is reaped anyway (from a
// thread, since the loop will never see its exit).
#[test]
fn a_dropped_child_outliving_its_loop_is_still_reaped() {
    let lp = shardloop::new_event_loop().unwrap();
    shardloop::set_event_loop(Some(lp.clone()));
    let (pid, stdin) = run_bounded(&lp, async {
        let mut child = Command::new("cat").stdin(Stdio::piped()).spawn().unwrap();
        (child.id(), child.stdin.take().unwrap())
    });
    shardloop::set_event_loop(None);
    lp.close().unwrap();
    assert!(!reaped(pid));
    drop(stdin); // cat sees end-of-file and exits
    let mut gone = false;
    for _ in 0..3000 {
        if reaped(pid) {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(gone, "child {pid} outlived its loop as a zombie");
}

// The reading side of test_read_stdout_after_process_exit: what the child wrote
// stays readable after it was reaped.
#[test]
fn stdout_is_readable_after_the_child_exited() {
    block_on(async {
        let mut child = Command::new("sh")
            .args(["-c", "printf 'left behind'"])
            .stdout(Stdio::piped())
            .spawn()?;
        assert!(child.wait().await?.success());
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .await?;
        assert_eq!(out, "left behind");
        io::Result::Ok(())
    })
    .unwrap();
}

// test_stdin_broken_pipe: writing to a child that exited without reading fails
// with BrokenPipe, it does not hang or kill us with SIGPIPE.
#[test]
fn writing_to_a_child_that_went_away_is_broken_pipe() {
    block_on(async {
        let mut child = Command::new("sh")
            .args(["-c", "exit 0"])
            .stdin(Stdio::piped())
            .spawn()?;
        let mut stdin = child.stdin.take().unwrap();
        let big = vec![b'x'; 4 * 1024 * 1024];
        let err = stdin.write_all(&big).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        assert!(child.wait().await?.success());
        io::Result::Ok(())
    })
    .unwrap();
}

// test_popen_error: a program that does not exist is an error, not a panic.
#[test]
fn a_missing_program_is_not_found() {
    block_on(async {
        let err = Command::new("/definitely/not/a/program")
            .spawn()
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(
            err.to_string().contains("/definitely/not/a/program"),
            "{err}"
        );
        let err = Command::new("no-such-program-shardloop")
            .output()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        io::Result::Ok(())
    })
    .unwrap();
}

// A thread with no loop: a clear error before anything is started.
#[test]
fn spawning_without_a_loop_is_a_clear_error() {
    std::thread::spawn(|| {
        let err = Command::new("true").spawn().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Other);
        assert!(err.to_string().contains("no current event loop"), "{err}");
    })
    .join()
    .unwrap();
}

// The environment and the working directory reach the child.
#[test]
fn env_and_current_dir_are_passed() {
    block_on(async {
        let out = Command::new("sh")
            .args(["-c", "echo \"$A|$B|${HOME-unset}|$(pwd)\""])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs([("A", "one"), ("B", "two")])
            .env("HOME", "/nowhere")
            .env_remove("HOME")
            .current_dir("/")
            .output()
            .await?;
        assert_eq!(String::from_utf8_lossy(&out.stdout), "one|two|unset|/\n");
        io::Result::Ok(())
    })
    .unwrap();
}

// test_devnull_input, and inheriting: a null stdin reads as empty; an inherited
// one is this process's own.
#[test]
fn stdin_null_and_inherit() {
    block_on(async {
        let child = Command::new("cat")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()?;
        assert!(child.stdin.is_none());
        let out = child.wait_with_output().await?;
        assert!(out.status.success());
        assert!(out.stdout.is_empty());

        let ours = std::fs::read_link("/proc/self/fd/0");
        let out = Command::new("sh")
            .args(["-c", "readlink /proc/$$/fd/0"])
            .stdin(Stdio::inherit())
            .output()
            .await?;
        if let Ok(ours) = ours {
            let theirs = String::from_utf8_lossy(&out.stdout);
            assert_eq!(theirs.trim_end(), ours.to_string_lossy());
        }
        io::Result::Ok(())
    })
    .unwrap();
}

// Subprocesses on a worker thread's own loop, not only on the main thread
// (asyncio needed a child watcher for that; a pidfd needs nothing).
#[test]
fn children_work_on_a_worker_thread_loop() {
    std::thread::spawn(|| {
        let lp = shardloop::new_event_loop().unwrap();
        shardloop::set_event_loop(Some(lp.clone()));
        let out = run_bounded(&lp, async {
            let mut child = Command::new("sh").args(["-c", "exit 9"]).spawn().unwrap();
            assert_eq!(child.wait().await.unwrap().code(), Some(9));
            Command::new("echo").arg("worker").output().await.unwrap()
        });
        assert_eq!(out.stdout, b"worker\n");
        shardloop::set_event_loop(None);
        lp.close().unwrap();
    })
    .join()
    .unwrap();
}

// Two loops on two threads, each with several children at once: every loop sees
// exactly its own children's exits, with their own codes.
#[test]
fn two_loops_never_take_each_others_children() {
    let threads: Vec<_> = (0..2)
        .map(|t| {
            std::thread::spawn(move || {
                let lp = shardloop::new_event_loop().unwrap();
                shardloop::set_event_loop(Some(lp.clone()));
                let codes = run_bounded(&lp, async move {
                    let mut children: Vec<_> = (0..8)
                        .map(|i| {
                            let code = t * 100 + i * 10 + 1;
                            let script = format!("sleep 0.0{i}; exit {code}");
                            Command::new("sh").args(["-c", &script]).spawn().unwrap()
                        })
                        .collect();
                    let mut codes = Vec::new();
                    for child in children.iter_mut().rev() {
                        codes.push(child.wait().await.unwrap().code());
                    }
                    codes
                });
                shardloop::set_event_loop(None);
                lp.close().unwrap();
                let want: Vec<_> = (0..8).rev().map(|i| Some(t * 100 + i * 10 + 1)).collect();
                assert_eq!(codes, want, "loop {t} got another loop's statuses");
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

// test_subprocess_communicate_stdout: many children at once, gathered in order.
#[test]
fn many_children_at_once_gathered_in_order() {
    block_on(async {
        let runs: Vec<_> = (0..10)
            .map(|i| async move {
                let out = Command::new("echo")
                    .arg(format!("foo{i}"))
                    .output()
                    .await
                    .unwrap();
                String::from_utf8(out.stdout)
                    .unwrap()
                    .trim_end()
                    .to_string()
            })
            .collect();
        let outs = shardloop::gather(runs).await.unwrap();
        let want: Vec<_> = (0..10).map(|i| format!("foo{i}")).collect();
        assert_eq!(outs, want);
    });
}
