//! Collecting what a child writes: [`Child::wait_with_output`], which reads its
//! stdout and stderr to the end while it waits for the exit, all at once, so that a
//! child filling one pipe while the parent reads the other cannot deadlock
//! (asyncio's `Process.communicate()`).

use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::process::Output;
use std::task::{Context, Poll};

use futures_io::AsyncRead;

use super::Child;

/// How much a read asks for at a time (a pipe holds 64 KiB by default).
const READ_CHUNK: usize = 64 * 1024;

impl Child {
    /// Waits for the child to exit while reading its stdout and stderr to the end,
    /// and returns all three (std's `Child::wait_with_output`, asyncio's
    /// `communicate()` with no input). The child's stdin is closed first. A stream
    /// that was not piped (or was taken) comes back empty.
    ///
    /// ```
    /// use shardloop::process::Command;
    /// use std::process::Stdio;
    /// shardloop::run(async {
    ///     let child = Command::new("sh")
    ///         .args(["-c", "echo out; echo err >&2"])
    ///         .stdout(Stdio::piped())
    ///         .stderr(Stdio::piped())
    ///         .spawn()?;
    ///     let out = child.wait_with_output().await?;
    ///     assert_eq!((&out.stdout[..], &out.stderr[..]), (&b"out\n"[..], &b"err\n"[..]));
    ///     std::io::Result::Ok(())
    /// })??;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn wait_with_output(mut self) -> io::Result<Output> {
        drop(self.stdin.take());
        let stdout = read_to_end(self.stdout.take());
        let stderr = read_to_end(self.stderr.take());
        let (status, stdout, stderr) = join3(self.wait(), stdout, stderr).await;
        Ok(Output {
            status: status?,
            stdout: stdout?,
            stderr: stderr?,
        })
    }
}

/// Everything `pipe` yields until end-of-file (nothing when there is no pipe).
async fn read_to_end<R: AsyncRead + Unpin>(pipe: Option<R>) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let Some(mut pipe) = pipe else {
        return Ok(out);
    };
    loop {
        let len = out.len();
        out.resize(len + READ_CHUNK, 0);
        let n = poll_fn(|cx| Pin::new(&mut pipe).poll_read(cx, &mut out[len..])).await;
        match n {
            Ok(0) => {
                out.truncate(len);
                return Ok(out);
            }
            Ok(n) => out.truncate(len + n),
            Err(e) => return Err(e),
        }
    }
}

/// Runs three futures at once; their outputs once all are done.
async fn join3<A: Future, B: Future, C: Future>(
    a: A,
    b: B,
    c: C,
) -> (A::Output, B::Output, C::Output) {
    let (mut a, mut b, mut c) = (pin!(a), pin!(b), pin!(c));
    let (mut ra, mut rb, mut rc) = (None, None, None);
    poll_fn(|cx| {
        poll_into(a.as_mut(), &mut ra, cx);
        poll_into(b.as_mut(), &mut rb, cx);
        poll_into(c.as_mut(), &mut rc, cx);
        match (ra.take(), rb.take(), rc.take()) {
            (Some(a), Some(b), Some(c)) => Poll::Ready((a, b, c)),
            (a, b, c) => {
                (ra, rb, rc) = (a, b, c);
                Poll::Pending
            }
        }
    })
    .await
}

/// Polls `fut` unless its output is already in `slot`, and puts it there when ready.
fn poll_into<F: Future>(fut: Pin<&mut F>, slot: &mut Option<F::Output>, cx: &mut Context<'_>) {
    if slot.is_none() {
        if let Poll::Ready(v) = fut.poll(cx) {
            *slot = Some(v);
        }
    }
}
