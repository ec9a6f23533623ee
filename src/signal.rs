//! Unix signal handlers on the main thread's loop: [`EventLoop::add_signal_handler`].
//!
//! Inside the signal context only signal-hook's async-signal-safe actions run: the
//! signal's pending flag is set, then a byte is written to a socketpair whose read
//! end is registered with the loop's reactor. When the reactor sees it readable, a
//! waker schedules a drain callback on the loop; the drain empties the socket, takes
//! the pending flags and schedules each due handler with `call_soon`. So a handler
//! runs as an ordinary loop callback (a panic goes to the exception handler), and
//! several deliveries of a signal before the loop gets to them run it once, as in
//! asyncio.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Wake, Waker};

use libc::c_int;
use mio::Token;
use signal_hook::low_level::{pipe, unregister};
use signal_hook::SigId;

use crate::current;
use crate::event_loop::inbox::Shared;
use crate::event_loop::LoopHandle;
use crate::io::reactor::{Direction, IoState, Reactor};
use crate::{Error, EventLoop};

/// One signal's handler on one loop.
struct Installed {
    callback: Rc<dyn Fn()>,
    /// Set in the signal context, taken by the drain.
    pending: Arc<AtomicBool>,
    /// The flag action and the socketpair write action, in that order.
    ids: [SigId; 2],
}

/// The socketpair the signal context writes to, and its registration.
struct Wakeup {
    read: mio::net::UnixStream,
    /// Cloned into each signal's write action.
    write: UnixStream,
    token: Token,
    io: Rc<IoState>,
    /// Schedules a drain when the read end becomes readable.
    waker: Waker,
}

/// A loop's signal handlers. Empty except on main-thread loops that added some.
#[derive(Default)]
pub(crate) struct LoopSignals {
    wakeup: RefCell<Option<Wakeup>>,
    handlers: RefCell<BTreeMap<c_int, Installed>>,
}

impl LoopSignals {
    fn add(&self, lp: &EventLoop, sig: c_int, callback: Rc<dyn Fn()>) -> Result<(), Error> {
        let replaced = self
            .handlers
            .borrow_mut()
            .get_mut(&sig)
            .map(|h| std::mem::replace(&mut h.callback, callback.clone()));
        if let Some(old) = replaced {
            drop(old); // outside the borrow: its destructor may call into the loop
            return Ok(());
        }
        self.ensure_wakeup(lp)?;
        let write = match &*self.wakeup.borrow() {
            Some(w) => w.write.try_clone()?,
            None => unreachable!("ensure_wakeup just set it"),
        };
        let pending = Arc::new(AtomicBool::new(false));
        defaults::acquire(sig)?;
        let installed =
            signal_hook::flag::register(sig, pending.clone()).and_then(
                |flag| match pipe::register(sig, write) {
                    Ok(wake) => Ok([flag, wake]),
                    Err(e) => {
                        unregister(flag);
                        Err(e)
                    }
                },
            );
        let ids = match installed {
            Ok(ids) => ids,
            Err(e) => {
                defaults::release(sig);
                return Err(registration_error(e));
            }
        };
        self.handlers.borrow_mut().insert(
            sig,
            Installed {
                callback,
                pending,
                ids,
            },
        );
        Ok(())
    }

    fn remove(&self, sig: c_int) -> bool {
        let removed = self.handlers.borrow_mut().remove(&sig);
        match removed {
            Some(installed) => {
                uninstall(sig, &installed);
                drop(installed);
                true
            }
            None => false,
        }
    }

    /// Creates and registers the socketpair on first use.
    fn ensure_wakeup(&self, lp: &EventLoop) -> Result<(), Error> {
        if self.wakeup.borrow().is_some() {
            return Ok(());
        }
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        let read = mio::net::UnixStream::from_std(read);
        let (token, io) = lp
            .inner
            .reactor
            .register(read.as_raw_fd(), Some(mio::Interest::READABLE | mio::Interest::WRITABLE))?;
        let waker = Waker::from(Arc::new(DrainWaker {
            shared: lp.inner.shared.clone(),
        }));
        *self.wakeup.borrow_mut() = Some(Wakeup {
            read,
            write,
            token,
            io,
            waker,
        });
        // Arms the waker (nothing can be pending yet).
        self.drain(lp);
        Ok(())
    }

    /// Empties the socketpair, re-arms its waker and schedules the due handlers.
    fn drain(&self, lp: &EventLoop) {
        {
            let wakeup = self.wakeup.borrow();
            let Some(w) = wakeup.as_ref() else { return };
            let mut cx = Context::from_waker(&w.waker);
            let mut buf = [0u8; 64];
            loop {
                // Pending means WouldBlock was hit and the waker is registered again.
                match w
                    .io
                    .poll_io(Direction::Read, &mut cx, || (&w.read).read(&mut buf))
                {
                    Poll::Pending => break,
                    Poll::Ready(Ok(n)) if n > 0 => {}
                    Poll::Ready(Ok(_)) => {
                        log::error!("[{}] the signal wakeup socket was closed", lp.name());
                        break;
                    }
                    Poll::Ready(Err(e)) => {
                        log::error!("[{}] reading the signal wakeup socket: {e}", lp.name());
                        break;
                    }
                }
            }
        }
        // A flag is set before its byte is written, so every byte read above has its
        // flag visible here.
        let due: Vec<Rc<dyn Fn()>> = self
            .handlers
            .borrow()
            .values()
            .filter(|h| h.pending.swap(false, Ordering::SeqCst))
            .map(|h| h.callback.clone())
            .collect();
        for callback in due {
            // Cannot fail: the drain runs as a callback of this (open, running) loop.
            let _ = lp.call_soon(move || callback());
        }
    }

    /// The loop closes: every handler is removed and the socketpair released.
    pub(crate) fn close(&self, reactor: &Reactor) {
        let handlers = std::mem::take(&mut *self.handlers.borrow_mut());
        for (sig, installed) in &handlers {
            uninstall(*sig, installed);
        }
        drop(handlers);
        let wakeup = self.wakeup.borrow_mut().take();
        if let Some(w) = wakeup {
            reactor.deregister(w.read.as_raw_fd(), w.token);
        }
    }
}

impl Drop for LoopSignals {
    fn drop(&mut self) {
        // A loop dropped without close: the signal actions must not outlive it.
        for (sig, installed) in self.handlers.get_mut().iter() {
            uninstall(*sig, installed);
        }
    }
}

/// Removes a handler's signal actions. After `unregister` returns, signal-hook
/// guarantees the action no longer runs, so its write end can be closed safely.
fn uninstall(sig: c_int, installed: &Installed) {
    for id in installed.ids {
        unregister(id);
    }
    defaults::release(sig);
}

fn registration_error(e: io::Error) -> Error {
    if e.raw_os_error() == Some(libc::EINVAL) {
        Error::InvalidSignal
    } else {
        Error::Io(e)
    }
}

/// The waker of the socketpair's read end: schedules a drain on the loop.
struct DrainWaker {
    shared: Arc<Shared>,
}

impl Wake for DrainWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let shared = self.shared.clone();
        let handle = LoopHandle {
            shared: self.shared.clone(),
        };
        // The reactor wakes us on the loop's thread while it runs, so this goes
        // straight into the ready queue. A closed loop refuses it: nothing to drain.
        let _ = handle.call_soon_threadsafe(move || {
            if let Some(lp) = current::local_loop_for(&shared) {
                lp.inner.signals.drain(&lp);
            }
        });
    }
}

/// Whether `sig` is a signal a handler can be added for.
fn check_signal(sig: c_int) -> Result<(), Error> {
    if sig < 1 || sig > libc::SIGRTMAX() || signal_hook::consts::FORBIDDEN.contains(&sig) {
        return Err(Error::InvalidSignal);
    }
    Ok(())
}

/// Restoring a signal's default behaviour once no loop handles it any more.
///
/// signal-hook keeps its process-wide handler installed after the last action is
/// unregistered, which would leave the signal ignored. asyncio restores `SIG_DFL`
/// instead; we do the same for signals whose disposition was `SIG_DFL` before we
/// first touched them, with a conditional action that emulates the default
/// (terminate, stop, or ignore) while no loop handles the signal. A signal that was
/// ignored (SIGPIPE in Rust programs) stays ignored, and one that had another handler
/// keeps it (signal-hook chains to it).
mod defaults {
    use super::*;

    struct Entry {
        /// The "emulate the default" switch; `None` when the signal was not `SIG_DFL`.
        restore: Option<Arc<AtomicBool>>,
        /// Loops with a handler for this signal.
        users: usize,
    }

    fn table() -> std::sync::MutexGuard<'static, HashMap<c_int, Entry>> {
        static TABLE: OnceLock<Mutex<HashMap<c_int, Entry>>> = OnceLock::new();
        TABLE
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// A loop is about to handle `sig`: the default behaviour is switched off.
    pub(super) fn acquire(sig: c_int) -> Result<(), Error> {
        let mut table = table();
        let entry = match table.entry(sig) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => v.insert(Entry {
                restore: first_touch(sig)?,
                users: 0,
            }),
        };
        entry.users += 1;
        if let Some(restore) = &entry.restore {
            restore.store(false, Ordering::SeqCst);
        }
        Ok(())
    }

    /// A loop stopped handling `sig`: the last one switches the default back on.
    pub(super) fn release(sig: c_int) {
        let mut table = table();
        if let Some(entry) = table.get_mut(&sig) {
            entry.users = entry.users.saturating_sub(1);
            if let (0, Some(restore)) = (entry.users, &entry.restore) {
                restore.store(true, Ordering::SeqCst);
            }
        }
    }

    /// Reads the disposition `sig` has before signal-hook replaces it; for `SIG_DFL`
    /// installs the (switched off) default emulation.
    fn first_touch(sig: c_int) -> Result<Option<Arc<AtomicBool>>, Error> {
        // SAFETY: `sigaction` is a plain C struct for which all-zero bytes are valid.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: with a null new action, sigaction only writes the current
        // disposition into `old`, which we own; it changes nothing.
        if unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) } != 0 {
            return Err(registration_error(io::Error::last_os_error()));
        }
        if old.sa_sigaction != libc::SIG_DFL || signal_hook::low_level::signal_name(sig).is_none() {
            // Ignored, handled elsewhere, or a signal (realtime) whose default
            // signal-hook cannot emulate: left as signal-hook leaves it.
            return Ok(None);
        }
        let restore = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register_conditional_default(sig, restore.clone())
            .map_err(registration_error)?;
        Ok(Some(restore))
    }
}

impl EventLoop {
    /// Runs `callback` on this loop whenever signal `sig` (a `libc::SIG*` number)
    /// arrives, as asyncio's `add_signal_handler`. The callback runs as an ordinary
    /// loop callback, never inside the signal handler, so it may do anything a
    /// callback may. Adding a handler for a signal that has one replaces it. Several
    /// deliveries before the loop gets to them may run it once.
    ///
    /// Errors: `Err(Error::InvalidSignal)` for SIGKILL, SIGSTOP, the synchronous
    /// fault signals (SIGSEGV, SIGILL, SIGFPE) or a number out of range;
    /// `Err(Error::Closed)` on a closed loop; `Err(Error::NotMainThread)` anywhere but
    /// the process's main thread.
    ///
    /// ```no_run
    /// // On the main thread:
    /// let lp = shardloop::new_event_loop()?;
    /// let stopper = lp.clone();
    /// lp.add_signal_handler(libc::SIGTERM, move || stopper.stop())?;
    /// lp.run_forever()?; // until SIGTERM
    /// assert!(lp.remove_signal_handler(libc::SIGTERM));
    /// # Ok::<(), shardloop::Error>(())
    /// ```
    pub fn add_signal_handler(&self, sig: i32, callback: impl Fn() + 'static) -> Result<(), Error> {
        check_signal(sig)?;
        if self.is_closed() {
            return Err(Error::Closed);
        }
        if !current::is_main_thread() {
            return Err(Error::NotMainThread);
        }
        self.inner.signals.add(self, sig, Rc::new(callback))
    }

    /// Removes the handler of `sig`; returns whether there was one. The signal gets
    /// back the behaviour it had before any loop handled it (its default, like
    /// asyncio restores `SIG_DFL`; or ignored, if it was ignored).
    pub fn remove_signal_handler(&self, sig: i32) -> bool {
        check_signal(sig).is_ok() && self.inner.signals.remove(sig)
    }
}
