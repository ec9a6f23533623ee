//! asyncio's synchronization primitives and queue, on the loop: [`Event`],
//! [`Lock`], [`Semaphore`], [`BoundedSemaphore`], [`Condition`], [`Barrier`], [`Queue`] (with [`LifoQueue`] and [`PriorityQueue`]).
//!
//! All are loop-local (`!Send`, no atomics): share them between the tasks of one
//! loop by cloning. Waiting is first come, first served, and a waiting future that
//! is dropped (its task cancelled) leaves the line at once; a permit or wakeup it had
//! just been handed goes to the next in line, so none is lost.

mod barrier;
mod condition;
mod event;
mod queue;
mod semaphore;
mod waiters;

pub use barrier::{Barrier, BrokenBarrier};
pub use condition::Condition;
pub use event::{Event, EventWait};
pub use queue::{Fifo, GetError, Lifo, LifoQueue, Priority, PriorityQueue, PutError, Queue, QueueOrder};
pub use semaphore::{BoundedSemaphore, Lock, LockGuard, Semaphore, SemaphorePermit};
