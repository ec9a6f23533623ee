//! [`yield_now`]: asyncio's `sleep(0)`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Lets the rest of the loop run before the task goes on: asyncio's `sleep(0)`. The
/// task is queued again behind everything ready now.
///
/// ```
/// use std::cell::RefCell;
/// use std::rc::Rc;
/// let lp = shardloop::new_event_loop()?;
/// let log = Rc::new(RefCell::new(Vec::new()));
/// let (l1, l2, lp2) = (log.clone(), log.clone(), lp.clone());
/// let task = lp.create_task(async move {
///     lp2.call_soon(move || l1.borrow_mut().push("callback")).unwrap();
///     shardloop::yield_now().await;
///     l2.borrow_mut().push("task");
/// })?;
/// lp.run_until_complete(task)??;
/// assert_eq!(*log.borrow(), ["callback", "task"]);
/// # Ok::<(), shardloop::Error>(())
/// ```
pub fn yield_now() -> YieldNow {
    YieldNow { yielded: false }
}

/// The future of [`yield_now`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct YieldNow {
    yielded: bool,
}

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
