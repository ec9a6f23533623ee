//! Child processes on the loop (asyncio's `create_subprocess_exec` and `Process`),
//! in the shape of std's [`std::process::Command`] and [`std::process::Child`].
//!
//! A child's exit is an event on the loop: [`Command::spawn`] opens a pidfd for it
//! (`pidfd_open(2)`, Linux 5.3 or later) and registers it with the current loop,
//! which wakes [`Child::wait`] when the child exits; the child is then reaped with
//! `waitpid` on its own pid. There is no `SIGCHLD` handler and no watcher thread, so
//! children work on every loop thread, not only the main one, and loops on several
//! threads never see each other's children. Pipes (`Stdio::piped()`) are
//! non-blocking, registered with the same loop, and implement futures-io's
//! `AsyncRead` / `AsyncWrite` (and tokio's io traits with the `tokio-io` feature).
//!
//! ```
//! use shardloop::process::Command;
//! shardloop::run(async {
//!     let out = Command::new("sh").arg("-c").arg("echo hi").output().await?;
//!     assert!(out.status.success());
//!     assert_eq!(out.stdout, b"hi\n");
//!
//!     let status = Command::new("sh").args(["-c", "exit 3"]).status().await?;
//!     assert_eq!(status.code(), Some(3));
//!
//!     // A program that does not exist is an error, not a panic.
//!     let missing = Command::new("/no/such/program").spawn().unwrap_err();
//!     assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
//!     std::io::Result::Ok(())
//! })??;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod child;
mod output;
mod pidfd;
mod pipe;

pub use child::Child;
pub use pipe::{ChildStderr, ChildStdin, ChildStdout};

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::path::Path;
use std::process::{ExitStatus, Output, Stdio};

use crate::io::registration::{current_loop, Registered};
use child::Exit;
use pidfd::PidFd;

/// A builder for a child process (std's `Command`, made for the loop).
///
/// The builder methods are std's, and [`as_std_mut`](Self::as_std_mut) reaches the
/// rest (`std::os::unix::process::CommandExt`: `uid`, `gid`, `process_group`,
/// `pre_exec`, ...). A child is spawned on this thread's loop (the running loop, or
/// the one set with [`set_event_loop`](crate::set_event_loop)) and belongs to it.
///
/// ```
/// use std::os::unix::process::CommandExt;
/// use shardloop::process::Command;
/// shardloop::run(async {
///     let mut cmd = Command::new("sh");
///     cmd.args(["-c", "echo $GREETING from $(pwd)"]).env("GREETING", "hello").current_dir("/");
///     cmd.as_std_mut().process_group(0); // its own process group
///     let out = cmd.output().await?;
///     assert_eq!(out.stdout, b"hello from /\n");
///     std::io::Result::Ok(())
/// })??;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Command {
    std: std::process::Command,
    /// Which of stdin, stdout and stderr were set here: [`output`](Self::output)
    /// gives the others its own defaults, as std's does.
    stdin_set: bool,
    stdout_set: bool,
    stderr_set: bool,
    kill_on_drop: bool,
}

impl Command {
    /// A command to run `program` (looked up in `PATH` when it has no `/`), with no
    /// arguments, this process's environment and working directory, and stdin,
    /// stdout and stderr inherited by [`spawn`](Self::spawn) and
    /// [`status`](Self::status).
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Command {
            std: std::process::Command::new(program),
            stdin_set: false,
            stdout_set: false,
            stderr_set: false,
            kill_on_drop: false,
        }
    }

    /// Adds one argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.std.arg(arg);
        self
    }

    /// Adds several arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.std.args(args);
        self
    }

    /// Sets an environment variable for the child.
    pub fn env(&mut self, key: impl AsRef<OsStr>, val: impl AsRef<OsStr>) -> &mut Self {
        self.std.env(key, val);
        self
    }

    /// Sets several environment variables for the child.
    pub fn envs<I, K, V>(&mut self, vars: I) -> &mut Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.std.envs(vars);
        self
    }

    /// Removes an environment variable from the child's environment.
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Self {
        self.std.env_remove(key);
        self
    }

    /// Starts the child with an empty environment (plus what `env` adds).
    pub fn env_clear(&mut self) -> &mut Self {
        self.std.env_clear();
        self
    }

    /// Sets the child's working directory.
    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.std.current_dir(dir);
        self
    }

    /// The child's stdin: `Stdio::piped()` gives a [`ChildStdin`] in
    /// [`Child::stdin`], `Stdio::null()`, `Stdio::inherit()` or a file as with std.
    pub fn stdin(&mut self, cfg: impl Into<Stdio>) -> &mut Self {
        self.std.stdin(cfg);
        self.stdin_set = true;
        self
    }

    /// The child's stdout: `Stdio::piped()` gives a [`ChildStdout`] in
    /// [`Child::stdout`].
    pub fn stdout(&mut self, cfg: impl Into<Stdio>) -> &mut Self {
        self.std.stdout(cfg);
        self.stdout_set = true;
        self
    }

    /// The child's stderr: `Stdio::piped()` gives a [`ChildStderr`] in
    /// [`Child::stderr`].
    pub fn stderr(&mut self, cfg: impl Into<Stdio>) -> &mut Self {
        self.std.stderr(cfg);
        self.stderr_set = true;
        self
    }

    /// Whether dropping the [`Child`] before it was reaped kills it with `SIGKILL`
    /// (default: no, as with std; either way a dropped child is reaped once it
    /// exits, see [`Child`]).
    ///
    /// ```
    /// use shardloop::process::Command;
    /// shardloop::run(async {
    ///     let child = Command::new("sleep").arg("1000").kill_on_drop(true).spawn()?;
    ///     drop(child); // SIGKILL now; the loop reaps it
    ///     std::io::Result::Ok(())
    /// })??;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn kill_on_drop(&mut self, kill_on_drop: bool) -> &mut Self {
        self.kill_on_drop = kill_on_drop;
        self
    }

    /// The std command underneath.
    pub fn as_std(&self) -> &std::process::Command {
        &self.std
    }

    /// The std command underneath, to set what this builder has no method for
    /// (`CommandExt`). Set stdin, stdout and stderr here rather than there:
    /// [`output`](Self::output) only knows about those set here.
    pub fn as_std_mut(&mut self) -> &mut std::process::Command {
        &mut self.std
    }

    /// Starts the child on this thread's loop.
    ///
    /// Errors: the program cannot be started (of kind `NotFound` when it does not
    /// exist, `PermissionDenied` when it is not executable; the message names
    /// it), there is no usable loop on this thread (kind `Other`, checked before
    /// anything starts), or the kernel has no `pidfd_open` (kind `Unsupported`).
    pub fn spawn(&mut self) -> io::Result<Child> {
        let lp = current_loop("a child process")?;
        let mut std_child = self.std.spawn().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot spawn {:?}: {e}", self.std.get_program()),
            )
        })?;
        let pidfd = match PidFd::open(std_child.id()).and_then(|fd| Registered::with_loop(&lp, fd))
        {
            Ok(pidfd) => pidfd,
            Err(e) => {
                // Without a pidfd nothing would reap it: stop it now. Waiting for a
                // killed process is short, and this path is for old kernels only.
                let _ = std_child.kill();
                let _ = std_child.wait();
                return Err(e);
            }
        };
        let (stdin, stdout, stderr) = (
            std_child.stdin.take(),
            std_child.stdout.take(),
            std_child.stderr.take(),
        );
        // Killed on drop until it is handed over, should a pipe fail to register.
        let mut child = Child::new(Exit::new(std_child, pidfd), true);
        child.stdin = stdin.map(|p| ChildStdin::new(&lp, p)).transpose()?;
        child.stdout = stdout.map(|p| ChildStdout::new(&lp, p)).transpose()?;
        child.stderr = stderr.map(|p| ChildStderr::new(&lp, p)).transpose()?;
        child.set_kill_on_drop(self.kill_on_drop);
        Ok(child)
    }

    /// Runs the child to its exit and collects its output (std's `output`,
    /// asyncio's `communicate()`): stdout and stderr are piped and stdin is null
    /// unless set otherwise. Both pipes are read while waiting, so a child writing
    /// a lot to both does not block. The child starts when this future is first
    /// polled, on the loop polling it.
    pub async fn output(&mut self) -> io::Result<Output> {
        let unset = [!self.stdin_set, !self.stdout_set, !self.stderr_set];
        self.set_unset_stdio(unset, [Stdio::null, Stdio::piped, Stdio::piped]);
        let child = self.spawn();
        // Back to what spawn() uses when nothing was set.
        self.set_unset_stdio(unset, [Stdio::inherit; 3]);
        child?.wait_with_output().await
    }

    /// Runs the child to its exit and returns its status (std's `status`): stdin,
    /// stdout and stderr are inherited unless set otherwise, and pipes asked for
    /// are closed at once (nobody would read them). The child starts when this
    /// future is first polled.
    pub async fn status(&mut self) -> io::Result<ExitStatus> {
        let mut child = self.spawn()?;
        (child.stdin, child.stdout, child.stderr) = (None, None, None);
        child.wait().await
    }
}

impl Command {
    /// Gives the streams in `unset` (stdin, stdout, stderr) the configurations `cfg`
    /// makes, through std's setters (so they stay unset here).
    fn set_unset_stdio(&mut self, unset: [bool; 3], cfg: [fn() -> Stdio; 3]) {
        type Setter = fn(&mut std::process::Command, Stdio) -> &mut std::process::Command;
        let setters: [Setter; 3] = [
            std::process::Command::stdin,
            std::process::Command::stdout,
            std::process::Command::stderr,
        ];
        for ((unset, set), cfg) in unset.into_iter().zip(setters).zip(cfg) {
            if unset {
                set(&mut self.std, cfg());
            }
        }
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.std, f)
    }
}
