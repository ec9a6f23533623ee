//! The current loop of each thread, and asyncio's module-level functions.
//!
//! Two per-thread slots: the *running* loop (set only while `run_forever` /
//! `run_until_complete` runs) and the *current* loop (set with [`set_event_loop`]).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::thread::ThreadId;

use crate::event_loop::inbox::Shared;
use crate::event_loop::LoopInner;
use crate::{Error, EventLoop, Task};

enum Current {
    /// Never set: the main thread creates a default loop on first use.
    Unset,
    Set(EventLoop),
    /// `set_event_loop(None)` was called.
    Cleared,
}

thread_local! {
    static RUNNING: RefCell<Option<EventLoop>> = const { RefCell::new(None) };
    /// The running loop's state, for the hot paths (a task's wake, a socket's
    /// check) that must not clone an `Rc` or borrow a `RefCell` to find it. Set and
    /// cleared together with `RUNNING`, which keeps the loop alive meanwhile.
    static RUNNING_INNER: Cell<*const LoopInner> = const { Cell::new(std::ptr::null()) };
    static CURRENT: RefCell<Current> = const { RefCell::new(Current::Unset) };
    /// Every live loop created on this thread (loops are `!Send`: they stay here).
    static OWNED: RefCell<Vec<Weak<LoopInner>>> = const { RefCell::new(Vec::new()) };
    /// This thread's id, cached: `thread::current()` costs a reference count.
    static THIS_THREAD: ThreadId = std::thread::current().id();
}

/// Records a loop created on this thread, so that threadsafe calls made here can
/// reach its ready queue directly.
pub(crate) fn register_owned(lp: &Rc<LoopInner>) {
    OWNED.with(|o| {
        let mut o = o.borrow_mut();
        o.retain(|w| w.strong_count() > 0);
        o.push(Rc::downgrade(lp));
    });
}

/// The loop behind `shared` if it belongs to this thread: the running loop (the
/// common case), or another loop created here.
pub(crate) fn local_loop_for(shared: &Arc<Shared>) -> Option<EventLoop> {
    let running = RUNNING
        .try_with(|r| {
            r.borrow()
                .as_ref()
                .filter(|lp| Arc::ptr_eq(&lp.inner.shared, shared))
                .cloned()
        })
        .ok()
        .flatten();
    if running.is_some() || THIS_THREAD.try_with(|t| *t != shared.owner).unwrap_or(true) {
        return running;
    }
    OWNED
        .try_with(|o| {
            o.borrow()
                .iter()
                .filter_map(Weak::upgrade)
                .find(|lp| Arc::ptr_eq(&lp.shared, shared))
                .map(|inner| EventLoop { inner })
        })
        .ok()
        .flatten()
}

/// Marks `lp` as this thread's running loop.
pub(crate) fn enter_running(lp: &EventLoop) -> Result<(), Error> {
    RUNNING.with(|r| {
        let mut r = r.borrow_mut();
        if r.is_some() {
            return Err(Error::AnotherLoopRunning);
        }
        *r = Some(lp.clone());
        RUNNING_INNER.with(|p| p.set(Rc::as_ptr(&lp.inner)));
        Ok(())
    })
}

pub(crate) fn leave_running() {
    // Cleared first: taking RUNNING may drop the loop.
    let _ = RUNNING_INNER.try_with(|p| p.set(std::ptr::null()));
    let _ = RUNNING.try_with(|r| r.borrow_mut().take());
}

/// The loop running on this thread, as a pointer (null when none runs): cheap enough
/// to compare against on every poll.
#[inline]
pub(crate) fn running_loop_ptr() -> *const LoopInner {
    RUNNING_INNER
        .try_with(Cell::get)
        .unwrap_or(std::ptr::null())
}

/// Runs `f` on the loop running on this thread if it is the loop behind `shared`.
#[inline]
pub(crate) fn with_running_loop_for<R>(
    shared: &Arc<Shared>,
    f: impl FnOnce(&LoopInner) -> R,
) -> Option<R> {
    let ptr = running_loop_ptr();
    if ptr.is_null() {
        return None;
    }
    // SAFETY: a non-null RUNNING_INNER points at the loop held by RUNNING on this
    // thread, which keeps it alive until leave_running clears the pointer first;
    // `LoopInner` is only ever used through shared references.
    let lp = unsafe { &*ptr };
    Arc::ptr_eq(&lp.shared, shared).then(|| f(lp))
}

/// Whether this is the process's main thread.
pub(crate) fn is_main_thread() -> bool {
    // SAFETY: getpid and gettid take no arguments, touch no memory and cannot fail.
    unsafe { libc::getpid() == libc::gettid() }
}

fn thread_name() -> String {
    let t = std::thread::current();
    t.name()
        .map(str::to_string)
        .unwrap_or_else(|| format!("{:?}", t.id()))
}

/// The running loop; else this thread's current loop. On the main thread a default
/// loop is created the first time; elsewhere `Err(Error::NoCurrentLoop)` until
/// [`set_event_loop`] is called.
///
/// ```
/// std::thread::spawn(|| {
///     assert!(shardloop::get_event_loop().is_err());
///     let lp = shardloop::new_event_loop().unwrap();
///     shardloop::set_event_loop(Some(lp.clone()));
///     assert_eq!(shardloop::get_event_loop().unwrap().name(), lp.name());
/// }).join().unwrap();
/// ```
pub fn get_event_loop() -> Result<EventLoop, Error> {
    if let Ok(lp) = get_running_loop() {
        return Ok(lp);
    }
    CURRENT.with(|c| {
        let mut c = c.borrow_mut();
        match &*c {
            Current::Set(lp) => Ok(lp.clone()),
            Current::Unset if is_main_thread() => {
                let lp = new_event_loop()?;
                *c = Current::Set(lp.clone());
                Ok(lp)
            }
            _ => Err(Error::NoCurrentLoop {
                thread: thread_name(),
            }),
        }
    })
}

/// Sets (or with `None`, clears) this thread's current loop. Once cleared, the main
/// thread gets no default loop either.
pub fn set_event_loop(lp: Option<EventLoop>) {
    let old = CURRENT.with(|c| {
        std::mem::replace(
            &mut *c.borrow_mut(),
            match lp {
                Some(lp) => Current::Set(lp),
                None => Current::Cleared,
            },
        )
    });
    // Dropped outside the borrow: dropping a loop runs destructors of its work.
    drop(old);
}

/// The loop running on this thread, or `Err(Error::NoRunningLoop)`.
pub fn get_running_loop() -> Result<EventLoop, Error> {
    RUNNING
        .try_with(|r| r.borrow().clone())
        .ok()
        .flatten()
        .ok_or(Error::NoRunningLoop)
}

/// A new loop with default settings. It is not made current.
pub fn new_event_loop() -> Result<EventLoop, Error> {
    EventLoop::new()
}

/// asyncio's `run`: runs `fut` on a fresh loop (current while it runs), then drops
/// the tasks left over, closes the loop and restores the thread's previous loop.
///
/// ```
/// let v = shardloop::run(async { 1 + 1 })?;
/// assert_eq!(v, 2);
/// # Ok::<(), shardloop::Error>(())
/// ```
pub fn run<F: Future>(fut: F) -> Result<F::Output, Error> {
    if get_running_loop().is_ok() {
        return Err(Error::AnotherLoopRunning);
    }
    let lp = new_event_loop()?;
    let previous =
        CURRENT.with(|c| std::mem::replace(&mut *c.borrow_mut(), Current::Set(lp.clone())));
    let result = lp.run_until_complete(fut);
    let closed = lp.close();
    CURRENT.with(|c| *c.borrow_mut() = previous);
    let output = result?;
    closed?;
    Ok(output)
}

/// `create_task` on the running loop.
///
/// # Panics
/// Outside a running loop.
pub fn spawn<F: Future + 'static>(fut: F) -> Task<F::Output> {
    get_running_loop()
        .and_then(|lp| lp.create_task(fut))
        .expect("shardloop::spawn called outside a running event loop")
}
