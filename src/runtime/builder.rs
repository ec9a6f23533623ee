//! [`Builder`]: the runtime's settings, and starting its shards.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::pin;
use super::report::ShardReport;
use super::shard::{self, Control, ShardConfig, StartHook};
use super::Runtime;
use crate::{Error, EventLoop, LoopBuilder, LoopHandle};

static NEXT_RUNTIME_ID: AtomicU64 = AtomicU64::new(0);

/// Settings for a [`Runtime`].
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// let started = Arc::new(AtomicUsize::new(0));
/// let seen = started.clone();
/// let rt = shardloop::Runtime::builder()
///     .shards(2)
///     .pin_to_cores(false)
///     .thread_name("worker")
///     .inbox_capacity(1024)
///     .on_shard_start(move |_shard| {
///         seen.fetch_add(1, Ordering::SeqCst);
///     })
///     .build()?;
/// assert_eq!(started.load(Ordering::SeqCst), 2); // build() waited for every shard
/// assert_eq!(rt.shard(1).name(), "worker-1");
/// # Ok::<(), shardloop::Error>(())
/// ```
#[must_use = "a Builder does nothing until build() is called"]
pub struct Builder {
    shards: Option<usize>,
    pin: bool,
    thread_name: String,
    on_start: Option<StartHook>,
    loop_builder: LoopBuilder,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            shards: None,
            pin: false,
            thread_name: "shard".to_string(),
            on_start: None,
            loop_builder: EventLoop::builder(),
        }
    }
}

impl Builder {
    /// How many shards (threads, each with its own loop); default `num_cpus::get()`.
    /// Zero is refused by [`build`](Self::build).
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = Some(n);
        self
    }

    /// Pin each shard's thread to one CPU (default off). Only the CPUs this process
    /// may run on are used (its affinity mask, as set by taskset or a cgroup); with
    /// more shards than those CPUs, the shards share them round-robin.
    pub fn pin_to_cores(mut self, pin: bool) -> Self {
        self.pin = pin;
        self
    }

    /// Names the shard threads (and their loops) `"{prefix}-{i}"`; default `"shard"`.
    pub fn thread_name(mut self, prefix: impl Into<String>) -> Self {
        self.thread_name = prefix.into();
        self
    }

    /// Runs `hook(shard_index)` on each shard thread once its loop exists and is the
    /// thread's current loop, before the loop starts. A panic in the hook fails
    /// [`build`](Self::build).
    pub fn on_shard_start<F: Fn(usize) + Send + Sync + 'static>(mut self, hook: F) -> Self {
        self.on_start = Some(Arc::new(hook));
        self
    }

    /// Each shard loop's I/O poll interval while busy
    /// ([`LoopBuilder::event_interval`]).
    pub fn event_interval(mut self, n: u32) -> Self {
        self.loop_builder = self.loop_builder.event_interval(n);
        self
    }

    /// Debug mode for every shard loop ([`LoopBuilder::debug`]): among other things,
    /// callbacks slower than the slow-callback duration are logged with the shard's
    /// loop name (`shard-3`).
    pub fn debug(mut self, on: bool) -> Self {
        self.loop_builder = self.loop_builder.debug(on);
        self
    }

    /// In debug mode, how long a callback or task poll may take before it is logged
    /// ([`LoopBuilder::slow_callback_duration`]).
    pub fn slow_callback_duration(mut self, d: Duration) -> Self {
        self.loop_builder = self.loop_builder.slow_callback_duration(d);
        self
    }

    /// How long each shard that runs out of work keeps looking for more (its inbox,
    /// and its I/O without blocking, yielding its core between looks) before it
    /// parks ([`LoopBuilder::spin_before_park`](crate::LoopBuilder::spin_before_park));
    /// default zero: park at once.
    pub fn spin_before_park(mut self, window: Duration) -> Self {
        self.loop_builder = self.loop_builder.spin_before_park(window);
        self
    }

    /// Every shard's loop a proactor (io_uring; [`LoopBuilder::proactor`]). `build`
    /// fails with `Error::Io` where the kernel refuses io_uring.
    pub fn proactor(mut self, on: bool) -> Self {
        self.loop_builder = self.loop_builder.proactor(on);
        self
    }

    /// Bounds each shard's inbox to `capacity` submitted jobs (default: unbounded).
    /// When a shard's inbox is full, [`Runtime::submit_to`] blocks a plain thread and
    /// resolves to `Err(Error::Full)` on a loop thread, [`Runtime::submit_to_async`]
    /// waits asynchronously, and [`Runtime::try_submit`] gives the work back.
    pub fn inbox_capacity(mut self, capacity: usize) -> Self {
        self.loop_builder = self.loop_builder.inbox_capacity(Some(capacity));
        self
    }

    /// Starts the shards. Returns once every shard's loop is running; if any shard
    /// fails to start (pinning, loop creation, a panicking start hook), the shards
    /// already started are stopped and joined and the first error is returned.
    pub fn build(self) -> Result<Runtime, Error> {
        let n = self.shards.unwrap_or_else(num_cpus::get);
        if n == 0 {
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a runtime needs at least one shard",
            )));
        }
        let cpus: Vec<Option<usize>> = if self.pin {
            let allowed = pin::allowed_cpus()?;
            (0..n).map(|i| Some(pin::cpu_for(i, &allowed))).collect()
        } else {
            vec![None; n]
        };
        let id = NEXT_RUNTIME_ID.fetch_add(1, Ordering::Relaxed);
        let (started_tx, started_rx) = flume::unbounded();
        let mut threads = Vec::with_capacity(n);
        let mut controls = Vec::with_capacity(n);
        let mut failure = None;
        for (index, &cpu) in cpus.iter().enumerate() {
            let control = Arc::new(Control::default());
            let name = format!("{}-{index}", self.thread_name);
            let cfg = ShardConfig {
                runtime: id,
                index,
                name: name.clone(),
                cpu,
                loop_builder: self.loop_builder.clone(),
                on_start: self.on_start.clone(),
            };
            let (c, tx) = (control.clone(), started_tx.clone());
            match thread::Builder::new()
                .name(name)
                .spawn(move || shard::run(cfg, c, tx))
            {
                Ok(t) => {
                    threads.push(t);
                    controls.push(control);
                }
                Err(e) => {
                    failure = Some(Error::Io(e));
                    break;
                }
            }
        }
        drop(started_tx);
        // Every started thread answers once: its handle (its loop runs) or its error.
        let mut handles: Vec<Option<LoopHandle>> = vec![None; threads.len()];
        for _ in 0..threads.len() {
            match started_rx.recv() {
                Ok((i, Ok(handle))) => handles[i] = Some(handle),
                Ok((_, Err(e))) => {
                    failure.get_or_insert(e);
                }
                Err(_) => {
                    let e = Error::Panicked("a shard thread died while starting".into());
                    failure.get_or_insert(e);
                    break;
                }
            }
        }
        if let Some(e) = failure {
            abort(&controls, &handles, threads);
            return Err(e);
        }
        Ok(Runtime {
            id,
            handles: handles.into_iter().flatten().collect(),
            cpus,
            controls,
            threads: Mutex::new(threads),
            closed: Default::default(),
        })
    }
}

/// Undoes a failed start: stops the shards that run (no grace) and joins every thread.
fn abort(
    controls: &[Arc<Control>],
    handles: &[Option<LoopHandle>],
    threads: Vec<JoinHandle<Option<ShardReport>>>,
) {
    let now = Instant::now();
    for (control, handle) in controls.iter().zip(handles) {
        control.request_shutdown(now);
        if let Some(h) = handle {
            h.stop();
        }
    }
    for t in threads {
        let _ = t.join();
    }
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("shards", &self.shards)
            .field("pin_to_cores", &self.pin)
            .field("thread_name", &self.thread_name)
            .field("on_shard_start", &self.on_start.is_some())
            .field("loop_builder", &self.loop_builder)
            .finish()
    }
}
