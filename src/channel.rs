//! Channels between shards, loops and plain threads: flume's MPMC channels.
//!
//! Every handle works both ways, so one channel can join any mix of threads and
//! loops: on a plain thread use the blocking `send` / `recv`; on a loop use
//! `send_async(..).await` / `recv_async().await`, which suspend the task instead of
//! blocking the loop's thread (never call the blocking ones on a loop thread: the
//! whole loop would stop). `try_send` / `try_recv` never wait.
//!
//! One caveat, from flume 0.11: do not let a blocking `recv` wait on a channel that
//! `recv_async` receivers also wait on. When an async receiver that was woken passes
//! its wakeup on, flume takes every waiting receiver off its wait list; an async one
//! registers again, but a blocking one can stay parked with messages queued. Give each
//! channel one kind of waiting receiver (senders may mix freely). (The runtime's own
//! bounded inboxes avoid this: blocked submitters wait through `recv_async` too.)
//!
//! When the other side is gone, the calls fail instead of waiting forever:
//! sending after every [`Receiver`] is dropped gives the value back in a
//! [`SendError`] ("sending on a closed channel"); receiving after every [`Sender`] is
//! dropped and the channel is empty gives [`RecvError::Disconnected`].
//!
//! ```
//! use shardloop::channel;
//! let rt = shardloop::Runtime::builder().shards(2).build()?;
//! let (tx, rx) = channel::bounded::<u64>(16);
//! // Shard 0 produces (waiting asynchronously whenever the channel is full) ...
//! let producer = rt.submit_to(0, move || async move {
//!     for i in 0..100 {
//!         tx.send_async(i).await.expect("the consumer is alive");
//!     }
//! });
//! // ... shard 1 consumes until the producer is gone.
//! let consumer = rt.submit_to(1, move || async move {
//!     let mut sum = 0;
//!     while let Ok(i) = rx.recv_async().await {
//!         sum += i;
//!     }
//!     sum
//! });
//! producer.wait()?;
//! assert_eq!(consumer.wait()?, 4950);
//! # Ok::<(), shardloop::Error>(())
//! ```

pub use flume::{
    bounded, unbounded, Receiver, RecvError, RecvTimeoutError, SendError, SendTimeoutError, Sender,
    TryRecvError, TrySendError,
};
