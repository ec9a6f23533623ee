//! # shardloop
//!
//! Python asyncio's event loop, native in Rust, and a thread-per-core runtime built
//! from it. Linux only: it is built on epoll, timerfd, eventfd and pidfd.
//!
//! The model is asyncio's: one [`EventLoop`] per thread; callbacks scheduled with
//! [`call_soon`](EventLoop::call_soon), [`call_later`](EventLoop::call_later) and
//! [`call_at`](EventLoop::call_at); tasks for futures (which may be `!Send`); a
//! current loop per thread ([`get_event_loop`], [`set_event_loop`]); and a
//! [`LoopHandle`] through which other threads call into a loop
//! ([`call_soon_threadsafe`](LoopHandle::call_soon_threadsafe),
//! [`submit`](LoopHandle::submit)).
//!
//! ```
//! use std::time::Duration;
//! let lp = shardloop::new_event_loop()?;
//! lp.call_soon(|| println!("hello from the loop"))?;
//! let handle = lp.handle();
//! let worker = std::thread::spawn(move || {
//!     // A blocking thread hands work to the loop and waits for the result.
//!     let n = handle.submit(|| async { 21 * 2 }).wait();
//!     handle.stop();
//!     n
//! });
//! lp.run_forever()?;
//! assert_eq!(worker.join().unwrap()?, 42);
//! # Ok::<(), shardloop::Error>(())
//! ```
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(not(target_os = "linux"))]
compile_error!("shardloop supports Linux only: it is built on epoll, timerfd, eventfd and pidfd");

/// Compiles each item on Linux only, so that elsewhere the `compile_error!` above is
/// the one error a build reports, not one per use of a Linux API.
macro_rules! linux_only {
    ($($item:item)*) => { $( #[cfg(target_os = "linux")] $item )* };
}

linux_only! {
    pub mod channel;
    mod combinators;
    mod current;
    mod error;
    mod event_loop;
    mod executor;
    #[cfg(feature = "hyper")]
    #[cfg_attr(docsrs, doc(cfg(feature = "hyper")))]
    pub mod hyper;
    mod io;
    mod loop_future;
    pub mod net;
    pub mod process;
    pub mod protocol;
    pub mod streams;
    mod remote;
    mod runtime;
    mod signal;
    pub mod sync;
    mod task;
    mod task_group;
    pub mod time;

    pub use current::{get_event_loop, get_running_loop, new_event_loop, run, set_event_loop, spawn};
    pub use error::{Error, Result};
    pub use event_loop::exception::{default_exception_handler, ExceptionContext};
    pub use event_loop::ready::Handle;
    pub use event_loop::stats::LoopStats;
    pub use event_loop::timers::TimerHandle;
    pub use event_loop::{EventLoop, LoopBuilder, LoopHandle, TrySubmitError};
    pub use combinators::{as_completed, gather, shield, wait, AsCompleted, ReturnWhen};
    pub use loop_future::LoopFuture;
    pub use protocol::{DatagramProtocol, DatagramTransport, Protocol, Server, Transport};
    pub use remote::Remote;
    pub use runtime::{
        current_shard, shard_index, shard_index_bytes, Builder as RuntimeBuilder, Runtime,
        ShardReport, ShutdownReport, DEFAULT_SHUTDOWN_GRACE,
    };
    pub use task_group::TaskGroup;
    pub use task::{all_tasks, current_task, yield_now, AnyTask, Task, YieldNow};

    /// The README's Rust examples, compiled and run as doctests so that they stay true.
    #[cfg(doctest)]
    #[doc = include_str!("../README.md")]
    struct ReadmeDoctests;
}
