//! What a graceful shutdown did, per shard and in total.

/// What one shard did during [`Runtime::shutdown`](crate::Runtime::shutdown).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardReport {
    /// The shard's index.
    pub shard: usize,
    /// Tasks that ran to their end (a value or a panic) during the grace period.
    pub tasks_finished: u64,
    /// Tasks cancelled: still running when the grace period ended (or cancelled during
    /// it). Their `Task` / `Remote` resolved to `Err(Error::Cancelled)`.
    pub tasks_cancelled: u64,
    /// Callbacks, timers and submitted jobs dropped without running when the loop
    /// closed (a dropped job's `Remote` resolved to `Err(Error::Cancelled)`).
    pub callbacks_dropped: u64,
}

/// What [`Runtime::shutdown`](crate::Runtime::shutdown) did: one [`ShardReport`] per
/// shard, in shard order, and totals.
///
/// ```
/// use std::time::Duration;
/// let rt = shardloop::Runtime::builder().shards(2).build()?;
/// // Never finishes: the shutdown cancels it when the grace period ends.
/// let _detached = rt.submit_to(0, || shardloop::time::sleep(Duration::from_secs(3600)));
/// let report = rt.shutdown(Duration::from_millis(20))?;
/// assert_eq!(report.cancelled(), 1);
/// assert_eq!(report.shards()[0].tasks_cancelled, 1);
/// # Ok::<(), shardloop::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    pub(crate) shards: Vec<ShardReport>,
}

impl ShutdownReport {
    /// The per-shard reports, in shard order.
    pub fn shards(&self) -> &[ShardReport] {
        &self.shards
    }

    /// Tasks that finished during the grace period, over all shards.
    pub fn finished(&self) -> u64 {
        self.shards.iter().map(|s| s.tasks_finished).sum()
    }

    /// Tasks cancelled, over all shards.
    pub fn cancelled(&self) -> u64 {
        self.shards.iter().map(|s| s.tasks_cancelled).sum()
    }

    /// Callbacks and jobs dropped without running, over all shards.
    pub fn dropped(&self) -> u64 {
        self.shards.iter().map(|s| s.callbacks_dropped).sum()
    }
}
