//! asyncio's synchronization primitives and queue, on the loop: [`Event`],
//! [`Lock`], [`Semaphore`], [`BoundedSemaphore`], [`Condition`], [`Barrier`], [`Queue`].
//!
//! All are loop-local (`!Send`, no atomics): share them between the tasks of one
//! loop by cloning. Waiting is first come, first served, and a waiting future that
//! is dropped (its task cancelled) leaves the line at once; a permit or wakeup it had
//! just been handed goes to the next in line, so none is lost.

mod condition;
mod event;
mod queue;
mod semaphore;
mod waiters;

pub use condition::{Barrier, Condition};
pub use event::{Event, EventWait};
pub use queue::{Queue, QueueEmpty, QueueFull};
pub use semaphore::{BoundedSemaphore, Lock, LockGuard, Semaphore, SemaphorePermit};
