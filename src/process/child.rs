//! [`Child`]: a running child process. Its exit is watched through a pidfd
//! registered with the loop that spawned it, and it is reaped with `waitpid` on its
//! own pid only, so it works on any loop thread and never takes another loop's child.

use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::process::ExitStatus;
use std::task::{ready, Context, Poll};

use super::pidfd::PidFd;
use super::pipe::{ChildStderr, ChildStdin, ChildStdout};
use crate::io::reactor::Direction;
use crate::io::registration::Registered;

/// A child process spawned by [`Command::spawn`](super::Command::spawn), on this
/// thread's loop (asyncio's `Process`).
///
/// The pipes asked for with `Stdio::piped()` are in [`stdin`](Self::stdin),
/// [`stdout`](Self::stdout) and [`stderr`](Self::stderr): `take()` them to use them
/// as futures-io streams. [`wait`](Self::wait) gives the exit status (as often as
/// asked); [`kill`](Self::kill) and [`send_signal`](Self::send_signal) signal it.
///
/// Dropping a `Child` does not wait for the process, and by default does not stop
/// it either (as with std): it runs on, and once it exits it is reaped by a
/// detached task on its loop, so it does not stay a zombie. With
/// [`Command::kill_on_drop`](super::Command::kill_on_drop) it is sent `SIGKILL`
/// first. If the loop closes (or is gone) before the process exits, a thread is
/// started to wait for it instead.
///
/// ```
/// use futures_util::{AsyncReadExt, AsyncWriteExt};
/// use shardloop::process::Command;
/// use std::process::Stdio;
/// shardloop::run(async {
///     let mut child = Command::new("cat").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
///     let (mut stdin, mut stdout) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
///     stdin.write_all(b"round trip").await?;
///     stdin.close().await?; // cat sees end-of-file
///     let mut back = String::new();
///     stdout.read_to_string(&mut back).await?;
///     assert_eq!(back, "round trip");
///     assert!(child.wait().await?.success());
///     std::io::Result::Ok(())
/// })??;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Child {
    /// The write end of the child's stdin, if it was `Stdio::piped()`.
    pub stdin: Option<ChildStdin>,
    /// The read end of the child's stdout, if it was `Stdio::piped()`.
    pub stdout: Option<ChildStdout>,
    /// The read end of the child's stderr, if it was `Stdio::piped()`.
    pub stderr: Option<ChildStderr>,
    pid: u32,
    /// `Some` until the `Child` is dropped.
    exit: Option<Exit>,
    kill_on_drop: bool,
}

impl Child {
    pub(super) fn new(exit: Exit, kill_on_drop: bool) -> Self {
        Child {
            stdin: None,
            stdout: None,
            stderr: None,
            pid: exit.child.id(),
            exit: Some(exit),
            kill_on_drop,
        }
    }

    pub(super) fn set_kill_on_drop(&mut self, kill_on_drop: bool) {
        self.kill_on_drop = kill_on_drop;
    }

    fn exit(&mut self) -> &mut Exit {
        self.exit.as_mut().expect("a Child's exit is only taken when it is dropped")
    }

    /// The process id (it stays readable after the child was reaped, when the
    /// system may already have given the number to another process).
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// Waits for the child to exit and returns its status (asyncio's
    /// `Process.wait()`). Like std's, it closes the child's stdin first, if it is
    /// still here, so that a child reading to end-of-file can finish. Waiting again
    /// returns the same status at once. The loop keeps running meanwhile: the exit
    /// arrives as an event on the child's pidfd.
    ///
    /// Cancel-safe: dropping the future leaves the child as it was.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        drop(self.stdin.take());
        let exit = self.exit();
        poll_fn(|cx| exit.poll_wait(cx)).await
    }

    /// The exit status if the child has exited (reaping it), `None` if it still
    /// runs; never waits.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.exit().try_wait()
    }

    /// Sends `SIGKILL` (asyncio's `Process.kill()`, std's `Child::kill`). It does not
    /// wait: [`wait`](Self::wait) for the status (`ExitStatusExt::signal()` is then
    /// `Some(9)`). Once the child has been reaped this does nothing and returns
    /// `Ok(())` (as std does since Rust 1.81): its pid may belong to another process
    /// by then.
    pub fn kill(&mut self) -> io::Result<()> {
        self.send_signal(libc::SIGKILL)
    }

    /// [`kill`](Self::kill), under tokio's name for it (whose `kill` also waits).
    pub fn start_kill(&mut self) -> io::Result<()> {
        self.kill()
    }

    /// Sends `SIGTERM` (asyncio's `Process.terminate()`), asking the child to stop.
    pub fn terminate(&mut self) -> io::Result<()> {
        self.send_signal(libc::SIGTERM)
    }

    /// Sends the signal `signal` (a `libc::SIG*` number) to the child (asyncio's
    /// `Process.send_signal()`). A number that is not a signal is an error of kind
    /// `InvalidInput`; once the child has been reaped, this does nothing.
    pub fn send_signal(&mut self, signal: i32) -> io::Result<()> {
        self.exit().signal(signal)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let Some(mut exit) = self.exit.take() else {
            return;
        };
        if self.kill_on_drop {
            if let Err(e) = exit.signal(libc::SIGKILL) {
                log::warn!("could not kill child process {} on drop: {e}", self.pid);
            }
        }
        if matches!(exit.try_wait(), Ok(Some(_))) {
            return;
        }
        let lp = exit.pidfd.event_loop();
        let orphan = Orphan(Some(exit));
        if let Some(lp) = lp {
            // On a closed loop, create_task refuses and drops the orphan, which
            // then reaps from a thread.
            if let Ok(task) = lp.create_task(orphan) {
                task.detach();
            }
        }
    }
}

impl fmt::Debug for Child {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Child")
            .field("pid", &self.pid)
            .field("status", &self.exit.as_ref().and_then(|e| e.status))
            .field("stdin", &self.stdin)
            .field("stdout", &self.stdout)
            .field("stderr", &self.stderr)
            .finish()
    }
}

/// A child's exit: its pidfd on the loop, and its std handle, which reaps it.
pub(super) struct Exit {
    /// Reaps with `waitpid(pid, WNOHANG)` (this pid only); its stdio was taken.
    child: std::process::Child,
    pidfd: Registered<PidFd>,
    /// Set once the child is reaped.
    status: Option<ExitStatus>,
}

impl Exit {
    pub(super) fn new(child: std::process::Child, pidfd: Registered<PidFd>) -> Self {
        Exit {
            child,
            pidfd,
            status: None,
        }
    }

    /// Ready once the child is reaped. The pidfd turns readable when the child
    /// exits (an exited child's at once), and only then is `waitpid` tried again.
    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<ExitStatus>> {
        if let Some(status) = self.status {
            return Poll::Ready(Ok(status));
        }
        let child = &mut self.child;
        let status = ready!(self.pidfd.poll_io(Direction::Read, cx, |_| {
            child.try_wait()?.ok_or_else(|| io::ErrorKind::WouldBlock.into())
        }))?;
        self.status = Some(status);
        Poll::Ready(Ok(status))
    }

    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
        }
        Ok(self.status)
    }

    fn signal(&mut self, signal: i32) -> io::Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        let pid = libc::pid_t::try_from(self.child.id())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
        // SAFETY: kill(2) takes two integers and shares no memory. The pid is still
        // this child's: it is not reaped yet (`status` is None), so even after it
        // exited its pid stays reserved for it.
        if unsafe { libc::kill(pid, signal) } == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The loop will not see this child's exit (it closed, or is gone): reap it now
    /// if it has exited, else from a thread of its own that waits for it.
    fn reap_elsewhere(mut self) {
        if matches!(self.try_wait(), Ok(Some(_))) {
            return;
        }
        let Exit {
            mut child, pidfd, ..
        } = self;
        drop(pidfd);
        let pid = child.id();
        let spawned = std::thread::Builder::new()
            .name(format!("shardloop-reap-{pid}"))
            .spawn(move || {
                let _ = child.wait();
            });
        if let Err(e) = spawned {
            log::warn!(
                "could not start a thread to reap child process {pid} ({e}): it stays \
                 a zombie until this process exits"
            );
        }
    }
}

/// The exit of a child whose [`Child`] was dropped before it was reaped, waited for
/// by a detached task on its loop. Dropped before that (the loop closed), it hands
/// the child to [`Exit::reap_elsewhere`].
struct Orphan(Option<Exit>);

impl Future for Orphan {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(exit) = self.0.as_mut() {
            if ready!(exit.poll_wait(cx)).is_ok() {
                self.0 = None;
            }
        }
        Poll::Ready(())
    }
}

impl Drop for Orphan {
    fn drop(&mut self) {
        if let Some(exit) = self.0.take() {
            exit.reap_elsewhere();
        }
    }
}
