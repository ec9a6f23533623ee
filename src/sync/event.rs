//! [`Event`]: asyncio's `Event`.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use super::waiters::{poll_woken, Waiter, Waiters};

/// A flag tasks wait on (asyncio's `Event`): [`wait`](Event::wait) returns once the
/// flag is set; [`set`](Event::set) wakes every waiter, even one that only runs after
/// a [`clear`](Event::clear). Loop-local (`!Send`); clones share the flag.
///
/// ```
/// let lp = shardloop::new_event_loop()?;
/// let ev = shardloop::sync::Event::new();
/// let waiter = lp.create_task({
///     let ev = ev.clone();
///     async move { ev.wait().await; "woken" }
/// })?;
/// lp.call_soon({ let ev = ev.clone(); move || ev.set() })?;
/// assert_eq!(lp.run_until_complete(waiter)??, "woken");
/// assert!(ev.is_set());
/// # Ok::<(), shardloop::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct Event {
    inner: Rc<Inner>,
}

#[derive(Default)]
struct Inner {
    set: Cell<bool>,
    waiters: Waiters,
}

impl Event {
    /// A cleared event.
    pub fn new() -> Event {
        Event::default()
    }

    /// Sets the flag and wakes every waiting task.
    pub fn set(&self) {
        self.inner.set.set(true);
        self.inner.waiters.wake_all();
    }

    /// Clears the flag: later [`wait`](Event::wait)s wait again.
    pub fn clear(&self) {
        self.inner.set.set(false);
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.inner.set.get()
    }

    /// Waits until the flag is set (at once if it is).
    pub fn wait(&self) -> EventWait {
        EventWait {
            event: self.inner.clone(),
            waiter: None,
        }
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event").field("set", &self.is_set()).finish()
    }
}

/// The future of [`Event::wait`].
pub struct EventWait {
    event: Rc<Inner>,
    waiter: Option<Rc<Waiter>>,
}

impl Future for EventWait {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.waiter.is_none() && self.event.set.get() {
            return Poll::Ready(());
        }
        let this = &mut *self;
        poll_woken(&mut this.waiter, &this.event.waiters, cx)
    }
}

impl Drop for EventWait {
    fn drop(&mut self) {
        if let Some(w) = self.waiter.take() {
            if !w.is_woken() {
                self.event.waiters.remove(&w);
            }
        }
    }
}
