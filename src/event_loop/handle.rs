//! [`LoopHandle`]: how other threads (and other loops) reach a loop. Its submit
//! calls are in `submit.rs`; what it sends goes through the inbox (`inbox.rs`).

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::inbox::{Msg, Shared};
use super::send_call::SendCall;
use crate::current;
use crate::Error;

/// A `Send + Sync + Clone` handle to a loop, for other threads (and other loops).
///
/// ```
/// let lp = shardloop::new_event_loop()?;
/// let handle = lp.handle();
/// let worker = std::thread::spawn(move || {
///     let answer = handle.submit(|| async { 40 + 2 }).wait();
///     handle.stop();
///     answer
/// });
/// lp.run_forever()?;
/// assert_eq!(worker.join().unwrap()?, 42);
/// # Ok::<(), shardloop::Error>(())
/// ```
#[derive(Clone)]
pub struct LoopHandle {
    pub(crate) shared: Arc<Shared>,
}

impl LoopHandle {
    /// Schedules `f` to run on the loop, from any thread. Wakes the loop if it sleeps.
    ///
    /// Returns `Err(Error::Closed)` if the loop is closed: the callback is then
    /// dropped, never silently kept.
    pub fn call_soon_threadsafe<F: FnOnce() + Send + 'static>(&self, f: F) -> Result<(), Error> {
        if let Some(lp) = current::local_loop_for(&self.shared) {
            return lp.call_soon(f).map(drop);
        }
        self.shared
            .send(Msg::Call(SendCall::new(f)))
            .map_err(|_| Error::Closed)
    }

    /// Stops the loop after its current iteration, from any thread; wakes it if it
    /// sleeps. Stopping a loop that is not running makes its next run do one
    /// iteration and return.
    pub fn stop(&self) {
        if let Some(lp) = current::local_loop_for(&self.shared) {
            return lp.stop();
        }
        let _ = self.shared.send(Msg::Stop);
    }

    /// Whether the loop is closed.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// The loop's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }
}

impl fmt::Debug for LoopHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopHandle")
            .field("name", &self.shared.name)
            .field("closed", &self.is_closed())
            .finish()
    }
}
