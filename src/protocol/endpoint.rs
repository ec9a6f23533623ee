//! What every transport shares (stream and datagram): its protocol, called with
//! panics caught and no borrow held; the write-buffer marks that drive
//! `pause_writing` / `resume_writing`; and the lifecycle that ends in exactly one
//! `connection_lost`, through `call_soon`, after which the socket is closed.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::{Rc, Weak};

use mio::Token;

use super::server::Accepted;
use super::{DatagramProtocol, Protocol};
use crate::error::panic_message;
use crate::event_loop::exception::ExceptionContext;
use crate::event_loop::ready::{Ready, Runnable};
use crate::event_loop::LoopInner;
use crate::io::reactor::{Readiness, ReadyQueue, Sink};
use crate::task::raw::drop_payload;
use crate::{Error, EventLoop};

/// The default high-water mark of a write buffer (asyncio's); the low one is a
/// quarter of it.
pub(super) const DEFAULT_HIGH_WATER: usize = 64 * 1024;

/// How many bytes one read asks for: the size of the per-thread read buffer.
pub(super) const READ_SIZE: usize = 64 * 1024;

/// After this many writes to a lost connection, each one logs a warning (asyncio's
/// `LOG_THRESHOLD_FOR_CONNLOST_WRITES`).
const LOST_WRITES_BEFORE_WARNING: u32 = 5;

thread_local! {
    /// The buffer every transport of this thread reads into: only one protocol
    /// method runs at a time, so one buffer serves them all, allocated once.
    static READ_BUFFER: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` on this thread's read buffer. A nested call (never made today) would
/// get a fresh buffer rather than the one in use.
pub(super) fn with_read_buffer<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    let mut buf = READ_BUFFER.with(Cell::take);
    if buf.len() != READ_SIZE {
        buf = vec![0; READ_SIZE];
    }
    let r = f(&mut buf);
    READ_BUFFER.with(|cell| cell.set(buf));
    r
}

/// The protocol methods the shared lifecycle calls, on both kinds of protocol.
pub(crate) trait Lifecycle {
    fn pause_writing(&mut self);
    fn resume_writing(&mut self);
    fn connection_lost(&mut self, err: Option<io::Error>);
}

impl Lifecycle for dyn Protocol {
    fn pause_writing(&mut self) {
        Protocol::pause_writing(self)
    }
    fn resume_writing(&mut self) {
        Protocol::resume_writing(self)
    }
    fn connection_lost(&mut self, err: Option<io::Error>) {
        Protocol::connection_lost(self, err)
    }
}

impl Lifecycle for dyn DatagramProtocol {
    fn pause_writing(&mut self) {
        DatagramProtocol::pause_writing(self)
    }
    fn resume_writing(&mut self) {
        DatagramProtocol::resume_writing(self)
    }
    fn connection_lost(&mut self, err: Option<io::Error>) {
        DatagramProtocol::connection_lost(self, err)
    }
}

/// The state every transport has, whatever its socket.
pub(super) struct Core<P: ?Sized> {
    lp: Weak<LoopInner>,
    /// Dropped once `connection_lost` has been delivered.
    protocol: RefCell<Option<Rc<RefCell<P>>>>,
    /// The protocol's type name, for reports.
    pub(super) name: &'static str,
    pub(super) token: Cell<Option<Token>>,
    /// In the ready queue (more readiness before it runs queues nothing more).
    pub(super) queued: Cell<bool>,
    /// Readiness the last events reported and no operation has used up yet.
    pub(super) readable: Cell<bool>,
    pub(super) writable: Cell<bool>,
    pub(super) read_closed: Cell<bool>,
    pub(super) reading_paused: Cell<bool>,
    /// `close` or `abort` was called (or the connection failed): no more reading.
    pub(super) closing: Cell<bool>,
    /// `connection_lost` is scheduled (its argument waits in `lost_with`).
    lost: Cell<bool>,
    lost_with: RefCell<Option<io::Error>>,
    delivered: Cell<bool>,
    /// (high, low) water marks of the write buffer.
    limits: Cell<(usize, usize)>,
    /// Whether the protocol should be paused, and what it was last told.
    want_paused: Cell<bool>,
    told_paused: Cell<bool>,
    flow_retry_scheduled: Cell<bool>,
    /// One of the protocol's methods is running (so it is borrowed).
    in_protocol: Cell<bool>,
    writes_after_lost: Cell<u32>,
    /// The server that accepted this connection counts it until `connection_lost`
    /// is delivered (what its `wait_closed` waits for).
    pub(super) accepted: RefCell<Option<Accepted>>,
}

impl<P: ?Sized> Core<P> {
    pub(super) fn new(lp: &EventLoop, protocol: Rc<RefCell<P>>, name: &'static str) -> Self {
        Core {
            lp: Rc::downgrade(&lp.inner),
            protocol: RefCell::new(Some(protocol)),
            name,
            token: Cell::new(None),
            queued: Cell::new(false),
            readable: Cell::new(false),
            writable: Cell::new(false),
            read_closed: Cell::new(false),
            reading_paused: Cell::new(false),
            closing: Cell::new(false),
            lost: Cell::new(false),
            lost_with: RefCell::new(None),
            delivered: Cell::new(false),
            limits: Cell::new((DEFAULT_HIGH_WATER, DEFAULT_HIGH_WATER / 4)),
            want_paused: Cell::new(false),
            told_paused: Cell::new(false),
            flow_retry_scheduled: Cell::new(false),
            in_protocol: Cell::new(false),
            writes_after_lost: Cell::new(0),
            accepted: RefCell::new(None),
        }
    }

    pub(super) fn event_loop(&self) -> Option<EventLoop> {
        self.lp.upgrade().map(|inner| EventLoop { inner })
    }

    /// Records what an event said.
    pub(super) fn note(&self, event: Readiness) {
        if event.read_closed {
            self.read_closed.set(true);
        }
        if event.readable {
            self.readable.set(true);
        }
        if event.writable {
            self.writable.set(true);
        }
    }

    /// Whether `connection_lost` is scheduled or delivered: the transport is done.
    pub(super) fn is_lost(&self) -> bool {
        self.lost.get()
    }

    /// Whether `connection_lost` was delivered.
    pub(super) fn is_delivered(&self) -> bool {
        self.delivered.get()
    }

    /// Whether reading is on: not paused, not closing.
    pub(super) fn reading(&self) -> bool {
        !self.reading_paused.get() && !self.closing.get()
    }

    /// A write came after the connection was lost: dropped, as asyncio does, with a
    /// warning once it keeps happening.
    pub(super) fn write_after_lost(&self) {
        let n = self.writes_after_lost.get() + 1;
        self.writes_after_lost.set(n);
        if n >= LOST_WRITES_BEFORE_WARNING {
            log::warn!("socket.send() raised exception: the transport of {} is closed; the data is dropped", self.name);
        }
    }

    /// Whether the protocol cannot be called now: one of its methods is running, or
    /// something else holds it borrowed.
    pub(super) fn protocol_busy(&self) -> bool {
        self.in_protocol.get()
            || self
                .protocol
                .borrow()
                .as_ref()
                .is_some_and(|p| p.try_borrow_mut().is_err())
    }

    pub(super) fn limits(&self) -> (usize, usize) {
        self.limits.get()
    }

    /// Reports a failed protocol method to the loop's exception handler (logs it
    /// if the loop is gone).
    fn report(&self, what: &str, msg: &str) {
        let message = format!("fatal error: protocol.{what}() call failed");
        match self.lp.upgrade() {
            Some(lp) => lp.call_exception_handler(&ExceptionContext {
                message,
                panic: Some(msg.to_string()),
                callback: Some(self.name),
                loop_name: lp.shared.name.clone(),
            }),
            None => log::error!("{message} ({}): {msg}", self.name),
        }
    }
}

/// A transport: its [`Core`], its socket and its write buffer. The lifecycle is
/// written once here, over this.
pub(super) trait Endpoint: Sized + 'static {
    type Proto: ?Sized + Lifecycle + 'static;

    fn core(&self) -> &Core<Self::Proto>;
    /// The `Rc` this endpoint lives in (None only while it is being dropped).
    fn me(&self) -> Option<Rc<Self>>;
    /// Bytes waiting in the write buffer.
    fn buffered(&self) -> usize;
    /// Whether anything waits in the write buffer (an empty datagram counts).
    fn has_pending_writes(&self) -> bool;
    /// Drops what waits in the write buffer (an abort).
    fn discard_buffer(&self);
    /// The loop is closing: writes the kernel finished, whose completions are not
    /// read yet, count as done (a ring send; nothing for the others).
    fn settle_writes(&self) {}
    /// Takes the socket out (None if it is gone already), to close it.
    fn take_socket(&self) -> Option<Box<dyn AsRawFd>>;
    /// Whether reading is on (for a stream, also: the end was not reached).
    fn reading(&self) -> bool {
        self.core().reading()
    }
    /// The socket can take more: send what the buffer holds.
    fn write_ready(&self);
    /// The socket has data: read and deliver it, within the turn's budget.
    fn read_ready(&self);

    /// Whether a turn in the ready queue would do anything now.
    fn has_work(&self) -> bool {
        let core = self.core();
        !core.is_lost()
            && ((core.readable.get() && self.reading())
                || (core.writable.get() && self.has_pending_writes()))
    }

    /// asyncio's `close`: stop reading now; `connection_lost(None)` once the
    /// buffer is sent (`write_ready` finishes that). Twice: nothing.
    fn close(&self) {
        if self.core().closing.replace(true) {
            return;
        }
        if !self.has_pending_writes() {
            self.schedule_lost(None);
        }
    }

    /// Deregisters the socket and closes it.
    fn release_socket(&self) {
        let Some(socket) = self.take_socket() else {
            return;
        };
        let core = self.core();
        if let (Some(token), Some(lp)) = (core.token.take(), core.lp.upgrade()) {
            lp.reactor.deregister_fd(socket.as_raw_fd(), token);
        }
        drop(socket);
    }

    /// Calls a protocol method `what` with panics caught, then tells the protocol
    /// about a write-buffer mark a write made inside the method crossed. None if it
    /// could not be called or panicked (the transport is then aborted), or if the
    /// protocol is gone (the connection was lost).
    fn call<R>(&self, what: &'static str, f: impl FnOnce(&mut Self::Proto) -> R) -> Option<R> {
        let r = self.invoke(what, f)?;
        self.deliver_flow();
        Some(r)
    }

    /// [`call`](Self::call) without the flow-control step.
    fn invoke<R>(&self, what: &'static str, f: impl FnOnce(&mut Self::Proto) -> R) -> Option<R> {
        let core = self.core();
        let protocol = core.protocol.borrow().clone()?;
        let Ok(mut p) = protocol.try_borrow_mut() else {
            self.protocol_failed(what, "the protocol is borrowed elsewhere (a RefCell borrow held across an await?)".into());
            return None;
        };
        core.in_protocol.set(true);
        let result = catch_unwind(AssertUnwindSafe(|| f(&mut *p)));
        core.in_protocol.set(false);
        drop(p);
        match result {
            Ok(r) => Some(r),
            Err(payload) => {
                let msg = panic_message(&*payload);
                drop_payload(payload);
                self.protocol_failed(what, msg);
                None
            }
        }
    }

    /// A protocol method panicked (or could not be called): report it, abort.
    fn protocol_failed(&self, what: &'static str, msg: String) {
        self.core().report(what, &msg);
        let err = io::Error::other(format!("protocol.{what}() panicked: {msg}"));
        self.force_close(Some(err));
    }

    /// An OS error ended the connection: logged at debug level (as asyncio does for
    /// `OSError`s), then the transport is aborted with it.
    fn fatal(&self, err: io::Error) {
        log::debug!("fatal error on the transport of {}: {err}", self.core().name);
        self.force_close(Some(err));
    }

    /// asyncio's `_force_close`: drop the buffer, stop reading, schedule
    /// `connection_lost(err)`. Nothing if that is scheduled already.
    fn force_close(&self, err: Option<io::Error>) {
        if self.core().is_lost() {
            return;
        }
        self.discard_buffer();
        self.schedule_lost(err);
    }

    /// Schedules `connection_lost(err)` with `call_soon`; on a loop that is closed
    /// or gone, delivers it now.
    fn schedule_lost(&self, err: Option<io::Error>) {
        let core = self.core();
        if core.lost.replace(true) {
            return;
        }
        core.closing.set(true);
        *core.lost_with.borrow_mut() = err;
        match (core.event_loop(), self.me()) {
            (Some(lp), Some(me)) if !lp.is_closed() => {
                // Should the loop refuse it, its close delivers it (`loop_closing`).
                let _ = lp.call_soon(move || me.deliver_lost());
            }
            _ => self.deliver_lost(),
        }
    }

    /// Calls `connection_lost` (once), drops the protocol, closes the socket.
    fn deliver_lost(&self) {
        let core = self.core();
        if core.delivered.replace(true) {
            return;
        }
        let err = core.lost_with.borrow_mut().take();
        // The protocol is dropped after the call: this breaks the cycle of a
        // protocol holding its transport.
        let protocol = core.protocol.borrow_mut().take();
        if let Some(protocol) = protocol {
            match protocol.try_borrow_mut() {
                Ok(mut p) => {
                    let result = catch_unwind(AssertUnwindSafe(|| p.connection_lost(err)));
                    drop(p);
                    if let Err(payload) = result {
                        core.report("connection_lost", &panic_message(&*payload));
                        drop_payload(payload);
                    }
                }
                Err(_) => core.report(
                    "connection_lost",
                    "the protocol is borrowed elsewhere, so connection_lost() was not called",
                ),
            }
            if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(protocol))) {
                core.report("drop", &panic_message(&*payload));
                drop_payload(payload);
            }
        }
        self.release_socket();
        drop(core.accepted.borrow_mut().take());
    }

    /// The loop is closing: a transport still open is aborted with an error saying
    /// so, and `connection_lost` is called now, as is one that was scheduled.
    fn loop_closing(&self) {
        let core = self.core();
        if core.delivered.get() {
            return;
        }
        if !core.lost.get() {
            self.settle_writes();
        }
        if !core.lost.replace(true) {
            // A transport closed after its last bytes went out ends as it would have
            // without the loop's close: `connection_lost(None)`.
            if !core.closing.get() || self.has_pending_writes() {
                self.discard_buffer();
                core.closing.set(true);
                *core.lost_with.borrow_mut() = Some(Error::Closed.into());
            }
        }
        self.deliver_lost();
    }

    /// Queues the endpoint to run again next iteration (its read budget is spent
    /// while the socket is still readable, or reading resumed).
    fn requeue(&self) {
        let core = self.core();
        if core.queued.get() {
            return;
        }
        if let (Some(lp), Some(me)) = (core.lp.upgrade(), self.me()) {
            core.queued.set(true);
            lp.push_ready_entry(me);
        }
    }

    /// The buffer grew: pause the protocol if it went over the high-water mark.
    fn maybe_pause(&self) {
        let core = self.core();
        if !core.want_paused.get() && self.buffered() > core.limits.get().0 {
            core.want_paused.set(true);
            self.deliver_flow();
        }
    }

    /// The buffer shrank: resume the protocol if it drained to the low-water mark.
    fn maybe_resume(&self) {
        let core = self.core();
        if core.want_paused.get() && self.buffered() <= core.limits.get().1 {
            core.want_paused.set(false);
            self.deliver_flow();
        }
    }

    /// asyncio's `set_write_buffer_limits(high, low)`, both given.
    fn set_limits(&self, high: usize, low: usize) -> Result<(), Error> {
        if low > high {
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("high ({high}) must be >= low ({low}) must be >= 0"),
            )));
        }
        self.core().limits.set((high, low));
        self.maybe_pause();
        Ok(())
    }

    /// Tells the protocol `pause_writing` / `resume_writing` until it knows the
    /// state the buffer is in. Not while one of its methods runs (it is borrowed):
    /// `call` does it when that method returns. If something else holds it
    /// borrowed, it is tried again on the next iteration.
    fn deliver_flow(&self) {
        let core = self.core();
        while core.want_paused.get() != core.told_paused.get() && !core.in_protocol.get() {
            let Some(protocol) = core.protocol.borrow().clone() else {
                return;
            };
            if protocol.try_borrow_mut().is_err() {
                self.retry_flow_later();
                return;
            }
            let pause = core.want_paused.get();
            core.told_paused.set(pause);
            let done = if pause {
                self.invoke("pause_writing", |p| p.pause_writing())
            } else {
                self.invoke("resume_writing", |p| p.resume_writing())
            };
            if done.is_none() {
                return;
            }
        }
    }

    fn retry_flow_later(&self) {
        let core = self.core();
        if core.flow_retry_scheduled.replace(true) {
            return;
        }
        if let (Some(lp), Some(me)) = (core.event_loop(), self.me()) {
            let _ = lp.call_soon(move || {
                me.core().flow_retry_scheduled.set(false);
                me.deliver_flow();
            });
        }
    }
}

impl<E: Endpoint> Sink for E {
    fn on_event(self: Rc<Self>, event: Readiness, ready: &ReadyQueue) {
        self.core().note(event);
        if self.has_work() && !self.core().queued.replace(true) {
            ready.borrow_mut().push_back(Ready::Entry(self));
        }
    }

    fn on_loop_close(&self) {
        self.loop_closing();
    }
}

/// An endpoint's turn in the ready queue: flush if the socket can take more, then
/// read if it has data.
impl<E: Endpoint> Runnable for E {
    fn run(&self, _lp: &LoopInner) {
        let core = self.core();
        core.queued.set(false);
        if core.is_lost() {
            return;
        }
        if core.writable.get() && self.has_pending_writes() {
            self.write_ready();
        }
        if core.readable.get() && self.reading() {
            self.read_ready();
        }
    }

    fn cancel(&self) -> bool {
        // Only the queue entry goes: the loop's close closes the endpoint itself
        // (`on_loop_close`).
        self.core().queued.set(false);
        false
    }

    fn is_cancelled(&self) -> bool {
        false
    }

    fn name(&self) -> &'static str {
        self.core().name
    }
}
