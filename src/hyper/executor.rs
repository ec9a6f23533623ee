//! [`LoopExecutor`]: `hyper::rt::Executor` that spawns onto the running loop.

use std::future::Future;

/// `hyper::rt::Executor` for hyper on shardloop: spawns each future hyper hands it
/// as a task on the running loop ([`crate::spawn`]). The futures may be `!Send`.
///
/// hyper's HTTP/1 server needs no executor; its HTTP/1 client's connection and
/// other hyper-based libraries (connection pools, HTTP/2) do.
///
/// ```
/// use hyper::rt::Executor;
/// use std::{cell::Cell, rc::Rc};
/// shardloop::run(async {
///     let hit = Rc::new(Cell::new(false)); // !Send, fine on one loop
///     let h = hit.clone();
///     shardloop::hyper::LoopExecutor.execute(async move { h.set(true) });
///     shardloop::time::sleep(std::time::Duration::from_millis(1)).await;
///     assert!(hit.get());
/// })?;
/// # Ok::<(), shardloop::Error>(())
/// ```
///
/// # Panics
/// `execute` panics outside a running loop, like [`crate::spawn`].
#[derive(Clone, Copy, Debug, Default)]
pub struct LoopExecutor;

impl<F: Future + 'static> ::hyper::rt::Executor<F> for LoopExecutor {
    fn execute(&self, fut: F) {
        // Dropping the `Task` detaches it: it runs to the end on its own.
        drop(crate::spawn(fut));
    }
}
