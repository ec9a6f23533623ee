//! The one error type of the crate.

use std::fmt;
use std::io;

/// Everything that can go wrong when scheduling or running work on a loop.
///
/// Display strings are lower-case sentences, asyncio's wording where asyncio has one.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The loop is closed: nothing can be scheduled on it or run by it any more.
    Closed,
    /// `run_forever` or `run_until_complete` was called on a loop that is already running.
    AlreadyRunning,
    /// A loop was started while another loop runs on this thread.
    AnotherLoopRunning,
    /// `close` was called on a running loop.
    CloseWhileRunning,
    /// The loop stopped before the future given to `run_until_complete` finished.
    StoppedBeforeComplete,
    /// This thread has no current loop (only the main thread gets a default one).
    NoCurrentLoop {
        /// The thread's name, or its id when it has none.
        thread: String,
    },
    /// No loop is running on this thread.
    NoRunningLoop,
    /// A loop was used from a thread other than the one that owns it.
    WrongThread,
    /// The work was cancelled before it finished.
    Cancelled,
    /// The work panicked; the payload's message.
    Panicked(String),
    /// The work did not finish in time.
    Timeout,
    /// Signal handlers can only be installed on the main thread's loop.
    NotMainThread,
    /// The signal number cannot be handled (SIGKILL, SIGSTOP, or out of range).
    InvalidSignal,
    /// A bounded inbox is full.
    Full,
    /// The call would block a shard's own loop thread waiting for the runtime that
    /// runs it (use the `_async` variant, or call it from outside the shards).
    BlockingInShard,
    /// A task awaited its own [`Task`](crate::Task) handle, which could never finish.
    AwaitedItself,
    /// The operation does not apply in the object's present state (asyncio's
    /// `InvalidStateError` and the `ValueError`s of its primitives: a
    /// `Queue::task_done` with nothing left to mark done, a `BoundedSemaphore`
    /// released too many times).
    InvalidState,
    /// A stream reader's `readuntil` or `readline` met its limit (asyncio's
    /// `LimitOverrunError`): the data before the separator, or the data searched
    /// without finding one, is longer than the reader's limit.
    LimitOverrun {
        /// How many buffered bytes the overrun concerns: up to the separator when
        /// it was found, else how far the search got.
        consumed: usize,
        /// Whether the separator was found (beyond the limit).
        separator_found: bool,
    },
    /// The stream ended before a read was complete (asyncio's `IncompleteReadError`):
    /// `readexactly` got fewer bytes than asked, or `readuntil` no separator.
    IncompleteRead {
        /// The bytes read before the end of the stream.
        partial: Vec<u8>,
        /// How many bytes were asked for; `None` when unknown (`readuntil`).
        expected: Option<usize>,
    },
    /// A queue's `put_nowait` found it full (asyncio's `QueueFull`). The
    /// [`PutError`](crate::sync::PutError) it converts from holds the item; this
    /// does not.
    QueueFull,
    /// A queue's `get_nowait` found it empty (asyncio's `QueueEmpty`).
    QueueEmpty,
    /// The queue was shut down (asyncio 3.13's `QueueShutDown`).
    QueueShutDown,
    /// A barrier was reset or aborted while its `wait` waited (asyncio's
    /// `BrokenBarrierError`).
    BrokenBarrier,
    /// An operating-system error.
    Io(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Closed => f.write_str("event loop is closed"),
            Error::AlreadyRunning => f.write_str("this event loop is already running"),
            Error::AnotherLoopRunning => {
                f.write_str("cannot run the event loop while another loop is running")
            }
            Error::CloseWhileRunning => f.write_str("cannot close a running event loop"),
            Error::StoppedBeforeComplete => {
                f.write_str("event loop stopped before future completed")
            }
            Error::NoCurrentLoop { thread } => {
                write!(f, "there is no current event loop in thread '{thread}'")
            }
            Error::NoRunningLoop => f.write_str("no running event loop"),
            Error::WrongThread => f.write_str(
                "non-thread-safe operation invoked on an event loop other than the current one",
            ),
            Error::Cancelled => f.write_str("the work was cancelled"),
            Error::Panicked(msg) => write!(f, "the work panicked: {msg}"),
            Error::Timeout => f.write_str("the work timed out"),
            Error::NotMainThread => {
                f.write_str("signal handlers can only be added on the main thread's loop")
            }
            Error::InvalidSignal => f.write_str("invalid signal number"),
            Error::Full => f.write_str("the loop's inbox is full"),
            Error::BlockingInShard => {
                f.write_str("this call would block a shard's own event loop thread")
            }
            Error::AwaitedItself => f.write_str("task cannot await on itself"),
            Error::InvalidState => f.write_str("invalid state for this operation"),
            Error::LimitOverrun {
                separator_found: false,
                ..
            } => f.write_str("separator is not found, and chunk exceed the limit"),
            Error::LimitOverrun {
                separator_found: true,
                ..
            } => f.write_str("separator is found, but chunk is longer than limit"),
            Error::IncompleteRead { partial, expected } => {
                write!(f, "{} bytes read on a total of ", partial.len())?;
                match expected {
                    Some(n) => write!(f, "{n} expected bytes"),
                    None => f.write_str("undefined expected bytes"),
                }
            }
            Error::QueueFull => f.write_str("the queue is full"),
            Error::QueueEmpty => f.write_str("the queue is empty"),
            Error::QueueShutDown => f.write_str("the queue is shut down"),
            Error::BrokenBarrier => f.write_str("the barrier is broken"),
            Error::Io(e) => write!(f, "i/o error: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Io(e) => e,
            Error::Timeout => io::Error::new(io::ErrorKind::TimedOut, e),
            Error::IncompleteRead { .. } => io::Error::new(io::ErrorKind::UnexpectedEof, e),
            other => io::Error::other(other),
        }
    }
}

/// Turns a panic payload into its message (`&str` and `String` payloads; anything
/// else gets a fixed text).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Shorthand for `std::result::Result<T, shardloop::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
