//! The raw task: one allocation holding a [`Header`] and the future (later its
//! output), and the `Waker` that points at it.
//!
//! Who touches what:
//! - The header's `state` word (the scheduled bit and the reference count) and its
//!   `shared` pointer are the only parts used off the loop's thread: a `Waker` may be
//!   cloned, woken and dropped anywhere.
//! - Everything else (the stage, the flags, the join waker) belongs to the loop's
//!   thread. A waker never reaches the future: a wake on the loop's own thread pushes
//!   the task into the ready queue, a wake elsewhere sends it through the inbox.
//!
//! Who holds a reference: the loop's task table while the task is alive (until its
//! future is dropped), the `Task` handle until it is dropped, every queued entry and
//! every waker. The future is dropped in place, exactly once, on the loop's thread,
//! by the loop (when the task finishes, is cancelled, or the loop closes); its output
//! is dropped on the loop's thread too (by the `Task` handle, which is `!Send`, or by
//! the loop if nobody holds one). So when the last reference goes, wherever that is,
//! only the header is left to free.

use std::cell::{Cell, UnsafeCell};
use std::future::Future;
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use super::coop;
use crate::current;
use crate::error::panic_message;
use crate::event_loop::inbox::{Msg, Shared};
use crate::event_loop::LoopInner;
use crate::Error;

/// The task sits in the ready queue or the inbox (a burst of wakes queues it once).
const SCHEDULED: usize = 1;
/// One reference, in the state word (the bits above the flag).
const REF: usize = 2;

/// A task's given name. Boxed twice on purpose: a `String` is three words in every
/// task's header, a `Box<String>` one, and most tasks are never named.
#[allow(clippy::box_collection)]
pub(crate) type TaskName = Box<String>;

/// What every task starts with, whatever its future.
pub(crate) struct Header {
    /// `SCHEDULED` and the reference count: the only part other threads write.
    state: AtomicUsize,
    vtable: &'static Vtable,
    /// The owning loop: its identity for the local fast path, its inbox for wakes
    /// from elsewhere.
    shared: Arc<Shared>,
    // The loop thread's own fields from here on.
    /// `Task::cancel` was called: the future is dropped at its next turn.
    cancel_requested: Cell<bool>,
    /// No `Task` handle is left: the output is dropped as soon as it exists.
    detached: Cell<bool>,
    /// The future is being polled or dropped right now: its stage must not be
    /// touched (a `Task` handle used from inside its own future sees this).
    busy: Cell<bool>,
    /// Whoever awaits the `Task`.
    join_waker: Cell<Option<Waker>>,
    /// The task's slot in its loop's task table (`u32`: it packs with the flags
    /// above; a loop holds far fewer than 4G tasks).
    key: Cell<u32>,
    /// Its number on its loop, counted from 1 (asyncio's `Task-N` names).
    id: u64,
    /// A name given with `create_task_named` or `set_name`: one thin pointer, as
    /// most tasks have none (`Box`: freed wherever the last reference goes, unlike
    /// an `Rc`).
    name: Cell<Option<TaskName>>,
}

impl Header {
    /// `waker` is the one woken when the task finishes (loop thread).
    fn register_joiner(&self, waker: &Waker) {
        let mut slot = self.join_waker.take();
        match &slot {
            Some(w) if w.will_wake(waker) => {}
            _ => slot = Some(waker.clone()),
        }
        self.join_waker.set(slot);
    }
}

/// The functions that know the future's type.
///
/// SAFETY (the contract of every entry): called with a pointer to a live
/// `TaskCell<F>` of this vtable's `F` (the caller holds a reference), and, but for
/// `dealloc`, on the owning loop's thread; `dealloc` only with the last reference.
struct Vtable {
    run: unsafe fn(NonNull<Header>, &LoopInner),
    cancel_now: unsafe fn(NonNull<Header>, &LoopInner) -> bool,
    poll_join: unsafe fn(NonNull<Header>, *mut (), &mut Context<'_>),
    drop_output: unsafe fn(NonNull<Header>),
    is_finished: unsafe fn(NonNull<Header>) -> bool,
    failure: unsafe fn(NonNull<Header>) -> Option<Failure>,
    dealloc: unsafe fn(NonNull<Header>),
    name: fn() -> &'static str,
}

/// How a finished task failed (asyncio tells a cancelled task from one that
/// raised: `wait(FIRST_EXCEPTION)` returns on the second only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    Cancelled,
    /// A panic, or another error its join would return.
    Error,
}

enum Stage<F: Future> {
    Running(F),
    Done(Result<F::Output, Error>),
    /// The future is gone and the output was handed out or dropped.
    Consumed,
}

/// The allocation: the header first (so a header pointer is a cell pointer).
#[repr(C)]
struct TaskCell<F: Future> {
    header: Header,
    /// Never dropped by the compiler: every drop of what it holds is explicit, on the
    /// loop's thread (see the module's comment).
    stage: UnsafeCell<ManuallyDrop<Stage<F>>>,
}

/// Allocates a task for `fut`, owned by the loop behind `shared`, already marked
/// scheduled. Returns three references: for the task table, for the ready queue and
/// for the `Task` handle.
pub(crate) fn allocate<F: Future + 'static>(
    fut: F,
    shared: Arc<Shared>,
    key: usize,
    id: u64,
    name: Option<TaskName>,
) -> (TaskRef, TaskRef, TaskRef) {
    let cell = Box::new(TaskCell {
        header: Header {
            state: AtomicUsize::new(SCHEDULED | (3 * REF)),
            vtable: vtable::<F>(),
            shared,
            cancel_requested: Cell::new(false),
            detached: Cell::new(false),
            busy: Cell::new(false),
            join_waker: Cell::new(None),
            key: Cell::new(u32::try_from(key).expect("fewer than 4G tasks on a loop")),
            id,
            name: Cell::new(name),
        },
        stage: UnsafeCell::new(ManuallyDrop::new(Stage::Running(fut))),
    });
    let ptr = NonNull::from(Box::leak(cell)).cast::<Header>();
    (TaskRef { ptr }, TaskRef { ptr }, TaskRef { ptr })
}

fn vtable<F: Future + 'static>() -> &'static Vtable {
    // A constant promoted to a `'static`: one vtable per future type.
    trait HasVtable {
        const VTABLE: Vtable;
    }
    impl<F: Future + 'static> HasVtable for F {
        const VTABLE: Vtable = Vtable {
            run: run::<F>,
            cancel_now: cancel_now::<F>,
            poll_join: poll_join::<F>,
            drop_output: drop_output::<F>,
            is_finished: is_finished::<F>,
            failure: failure::<F>,
            dealloc: dealloc::<F>,
            name: std::any::type_name::<F>,
        };
    }
    &<F as HasVtable>::VTABLE
}

/// One counted reference to a task.
pub(crate) struct TaskRef {
    ptr: NonNull<Header>,
}

// SAFETY: the only things a TaskRef does on a thread other than its loop's are
// counting references (atomic), reading the immutable `shared` and `vtable`, and,
// for the last reference, freeing the allocation, which by then holds no future or
// output (see the module's comment). Every other method is called by the loop on
// its own thread: the loop only runs what is in its own queues.
unsafe impl Send for TaskRef {}

impl TaskRef {
    fn header(&self) -> &Header {
        // SAFETY: this reference keeps the allocation alive.
        unsafe { self.ptr.as_ref() }
    }

    /// Whether both name the same task.
    pub(crate) fn same(&self, other: &TaskRef) -> bool {
        self.ptr == other.ptr
    }

    /// Whether this names the task at `ptr`.
    pub(crate) fn is(&self, ptr: NonNull<Header>) -> bool {
        self.ptr == ptr
    }

    /// Polls the task (the loop, on its thread). A panic is caught and resolves it.
    pub(crate) fn run(&self, lp: &LoopInner) {
        // SAFETY: called by the owning loop on its thread; the vtable matches the cell.
        unsafe { (self.header().vtable.run)(self.ptr, lp) }
    }

    /// Drops the future now, if it is still there (the loop is closing): the task
    /// resolves to `Err(Cancelled)`. Whether it was still running.
    pub(crate) fn cancel_now(&self, lp: &LoopInner) -> bool {
        // SAFETY: as for `run`.
        unsafe { (self.header().vtable.cancel_now)(self.ptr, lp) }
    }

    /// The future's type name, for logs.
    pub(crate) fn type_name(&self) -> &'static str {
        (self.header().vtable.name)()
    }

    /// Its number on its loop, from 1.
    pub(crate) fn id(&self) -> u64 {
        self.header().id
    }

    /// Its name: the one it was given, else asyncio's `Task-N` (loop thread).
    pub(crate) fn name(&self) -> String {
        let h = self.header();
        let given = h.name.take();
        let name = match &given {
            Some(n) => String::clone(n),
            None => format!("Task-{}", h.id),
        };
        h.name.set(given);
        name
    }

    /// Names the task (loop thread).
    pub(crate) fn set_name(&self, name: &str) {
        self.header().name.set(Some(Box::new(name.to_owned())));
    }

    /// How it failed, if it finished with an error whose result is still there to
    /// read (loop thread).
    pub(crate) fn failure(&self) -> Option<Failure> {
        // SAFETY: the handle is used on the loop's thread.
        unsafe { (self.header().vtable.failure)(self.ptr) }
    }

    /// Ready once the task has finished, without taking its output: until then the
    /// waker is the one woken when it finishes (it replaces the previous joiner's,
    /// so only the holder of the `Task` handle may call this).
    pub(crate) fn poll_finished(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_finished() {
            return Poll::Ready(());
        }
        self.header().register_joiner(cx.waker());
        Poll::Pending
    }

    /// Polls for the output: `out` must point at a `Poll<Result<T, Error>>` of the
    /// task's output type `T`. Loop thread only.
    ///
    /// # Safety
    /// `out`'s type must match the future's output type.
    pub(crate) unsafe fn poll_join(&self, out: *mut (), cx: &mut Context<'_>) {
        // SAFETY: `out` as the caller promises; a live cell (our reference) of the
        // vtable's type, on the loop's thread (the handle is `!Send`).
        (self.header().vtable.poll_join)(self.ptr, out, cx)
    }

    /// Asks the task to stop at its next turn (the `Task` handle).
    pub(crate) fn request_cancel(&self) {
        let h = self.header();
        // SAFETY: the handle is used on the loop's thread.
        if !unsafe { (h.vtable.is_finished)(self.ptr) } && !h.cancel_requested.replace(true) {
            wake_by_ref(self.ptr);
        }
    }

    /// Whether the task completed, panicked or was cancelled (loop thread).
    pub(crate) fn is_finished(&self) -> bool {
        // SAFETY: the handle is used on the loop's thread.
        unsafe { (self.header().vtable.is_finished)(self.ptr) }
    }

    /// Nobody will read the output: drop it if it is there, or as soon as it is.
    pub(crate) fn detach(&self) {
        self.header().detached.set(true);
        // SAFETY: the handle is used on the loop's thread.
        unsafe { (self.header().vtable.drop_output)(self.ptr) }
    }
}

impl Clone for TaskRef {
    fn clone(&self) -> Self {
        self.header().state.fetch_add(REF, Ordering::Relaxed);
        TaskRef { ptr: self.ptr }
    }
}

impl Drop for TaskRef {
    fn drop(&mut self) {
        release(self.ptr);
    }
}

/// Drops one reference; the last one frees the task.
fn release(ptr: NonNull<Header>) {
    // SAFETY: the caller owned a reference, so the header is alive.
    let header = unsafe { ptr.as_ref() };
    // AcqRel: the freeing thread sees every other thread's last use of the task.
    let prev = header.state.fetch_sub(REF, Ordering::AcqRel);
    if prev & !SCHEDULED == REF {
        // SAFETY: that was the last reference.
        unsafe { (header.vtable.dealloc)(ptr) }
    }
}

/// Marks the task scheduled and queues it, unless it is queued already. Any thread.
fn wake_by_ref(ptr: NonNull<Header>) {
    // SAFETY: the caller (a waker or a TaskRef) holds a reference.
    let header = unsafe { ptr.as_ref() };
    if header.state.fetch_or(SCHEDULED, Ordering::AcqRel) & SCHEDULED != 0 {
        return;
    }
    header.state.fetch_add(REF, Ordering::Relaxed);
    enqueue(TaskRef { ptr });
}

/// Hands a newly scheduled task to its loop: straight into the ready queue on the
/// loop's own running thread, else through the inbox. A closed loop refuses it; the
/// task is gone by then, so dropping the reference is all there is to do.
fn enqueue(task: TaskRef) {
    // SAFETY: `task` holds a reference for as long as `header` is used here: until
    // it is pushed into the queue below, which then holds it (and on this thread,
    // so nothing can free it meanwhile), or until `shared` is cloned off it.
    let header = unsafe { task.ptr.as_ref() };
    let mut task = Some(task);
    current::with_running_loop_for(&header.shared, |lp| {
        task = task.take().and_then(|t| lp.push_ready_task(t));
    });
    let Some(task) = task else { return };
    // Our own count on the loop's shared part: once the message is in, the loop may
    // run the task and free it (header included) before `send` returns.
    let shared = header.shared.clone();
    if let Err(msg) = shared.send(Msg::Wake(task)) {
        drop(msg);
    }
}

// The waker: its data pointer is the header; each waker holds one reference.

static WAKER_VTABLE: RawWakerVTable =
    RawWakerVTable::new(waker_clone, waker_wake, waker_wake_by_ref, waker_drop);

unsafe fn waker_clone(data: *const ()) -> RawWaker {
    // SAFETY: a waker's data is a live header: the waker being cloned holds a
    // reference. Only the atomic state is touched, which any thread may do.
    let header = &*(data as *const Header);
    header.state.fetch_add(REF, Ordering::Relaxed);
    RawWaker::new(data, &WAKER_VTABLE)
}

unsafe fn waker_wake(data: *const ()) {
    // SAFETY: as in `waker_clone`; this waker's reference is consumed here (passed
    // into the queue or released).
    let ptr = NonNull::new_unchecked(data as *mut Header);
    let header = ptr.as_ref();
    if header.state.fetch_or(SCHEDULED, Ordering::AcqRel) & SCHEDULED != 0 {
        release(ptr);
        return;
    }
    // The waker's own reference goes into the queue.
    enqueue(TaskRef { ptr });
}

unsafe fn waker_wake_by_ref(data: *const ()) {
    // SAFETY: as in `waker_clone`; the waker keeps its reference.
    wake_by_ref(NonNull::new_unchecked(data as *mut Header));
}

unsafe fn waker_drop(data: *const ()) {
    // SAFETY: as in `waker_clone`; the waker's reference is given back.
    release(NonNull::new_unchecked(data as *mut Header));
}

/// A waker for the task that borrows the caller's reference (no count taken):
/// wrapped in `ManuallyDrop` so that it never gives back what it did not take.
///
/// # Safety
/// The caller keeps a reference for as long as the waker (not its clones) is used.
unsafe fn borrowed_waker(ptr: NonNull<Header>) -> ManuallyDrop<Waker> {
    // SAFETY: the vtable's functions keep the `RawWaker` contract (clone takes a
    // reference, wake and drop give one back); `ManuallyDrop` keeps this one waker
    // from giving back the caller's reference, which it never took.
    ManuallyDrop::new(Waker::from_raw(RawWaker::new(
        ptr.as_ptr() as *const (),
        &WAKER_VTABLE,
    )))
}

// The typed functions behind the vtable. Each is called on the loop's thread with a
// pointer to a live `TaskCell<F>` (the caller holds a reference).

unsafe fn cell<'a, F: Future>(ptr: NonNull<Header>) -> (&'a Header, *mut Stage<F>) {
    // SAFETY: by the vtable's contract `ptr` is a live `TaskCell<F>` (repr(C), the
    // header first); the stage is handed out as a raw pointer, never as a reference
    // that could outlive a check of `busy`.
    let cell = ptr.cast::<TaskCell<F>>().as_ptr();
    // ManuallyDrop is repr(transparent): its pointer is the stage's.
    (&(*cell).header, (*cell).stage.get().cast::<Stage<F>>())
}

unsafe fn run<F: Future>(ptr: NonNull<Header>, lp: &LoopInner) {
    // SAFETY: the vtable's contract (a live cell, the loop's thread); the stage is
    // only borrowed while `busy` keeps every other path off it.
    let (header, stage) = cell::<F>(ptr);
    // Cleared before the poll: a wake during the poll queues the task again.
    header.state.fetch_and(!SCHEDULED, Ordering::AcqRel);
    if header.busy.get() {
        return;
    }
    let Stage::Running(fut) = &mut *stage else {
        return;
    };
    lp.stats.tasks_polled.set(lp.stats.tasks_polled.get() + 1);
    if header.cancel_requested.get() {
        finish::<F>(ptr, lp, Err(Error::Cancelled));
        return;
    }
    header.busy.set(true);
    // SAFETY: the future lives in this allocation, which never moves, and it is only
    // ever dropped in place (`finish`): it is pinned from its first poll to its drop.
    let fut = Pin::new_unchecked(fut);
    let waker = borrowed_waker(ptr);
    let mut cx = Context::from_waker(&waker);
    let polled = {
        let _budget = coop::Budget::enter();
        let outer = lp.current_task.replace(header.key.get() as usize);
        let polled = catch_unwind(AssertUnwindSafe(|| fut.poll(&mut cx)));
        lp.current_task.set(outer);
        polled
    };
    header.busy.set(false);
    match polled {
        Ok(Poll::Pending) => {}
        Ok(Poll::Ready(v)) => finish::<F>(ptr, lp, Ok(v)),
        Err(payload) => {
            let msg = panic_message(&*payload);
            drop_payload(payload);
            lp.report_panic("task", (header.vtable.name)(), msg.clone());
            finish::<F>(ptr, lp, Err(Error::Panicked(msg)));
        }
    }
}

/// Drops the future in place (catching a panicking destructor), stores or drops the
/// result, takes the task off its loop's table and wakes its joiner.
unsafe fn finish<F: Future>(
    ptr: NonNull<Header>,
    lp: &LoopInner,
    result: Result<F::Output, Error>,
) {
    // SAFETY: called by `run` and `cancel_now` with the stage `Running` and nothing
    // else borrowing it; the future is dropped in place and the stage written over
    // without a second drop.
    let (header, stage) = cell::<F>(ptr);
    header.busy.set(true);
    // The future is dropped where it is; the stage is then overwritten without a
    // second drop, even if the destructor panicked (drop glue has then dropped the
    // rest of the future while unwinding).
    let dropped = catch_unwind(AssertUnwindSafe(|| ptr::drop_in_place(stage)));
    ptr::write(stage, Stage::Consumed);
    // The result is settled and stored before any user code runs again (the
    // exception handler, the output's destructor, the joiner's waker): whoever looks
    // at the `Task` from there sees it finished, with its final result.
    let mut destructor_panic = None;
    let mut orphan = None;
    let result = match dropped {
        Ok(()) => result,
        Err(payload) => {
            let msg = panic_message(&*payload);
            drop_payload(payload);
            destructor_panic = Some(msg.clone());
            match result {
                // A value whose future then failed to drop: the joiner hears of it.
                Ok(v) => {
                    orphan = Some(v);
                    Err(Error::Panicked(msg))
                }
                other => other,
            }
        }
    };
    lp.stats
        .count_task_end(matches!(result, Err(Error::Cancelled)));
    let unread = if header.detached.get() {
        Some(result)
    } else {
        ptr::write(stage, Stage::Done(result));
        None
    };
    header.busy.set(false);
    lp.remove_task(header.key.get() as usize, ptr);
    if let Some(msg) = destructor_panic {
        lp.report_panic("task destructor", (header.vtable.name)(), msg);
    }
    drop_reporting(lp, header, orphan);
    drop_reporting(lp, header, unread);
    if let Some(w) = header.join_waker.take() {
        lp.wake_reporting(w, header.vtable.name);
    }
}

unsafe fn cancel_now<F: Future>(ptr: NonNull<Header>, lp: &LoopInner) -> bool {
    // SAFETY: the vtable's contract; `busy` is checked before the stage is read.
    let (header, stage) = cell::<F>(ptr);
    if header.busy.get() || !matches!(&*stage, Stage::Running(_)) {
        return false;
    }
    header.cancel_requested.set(true);
    finish::<F>(ptr, lp, Err(Error::Cancelled));
    true
}

unsafe fn poll_join<F: Future>(ptr: NonNull<Header>, out: *mut (), cx: &mut Context<'_>) {
    // SAFETY: the vtable's contract, and `out` points at a `Poll<Result<F::Output,
    // Error>>` (the `Task<T>` handle is typed by this task's output); `busy` is
    // checked before the stage is read.
    let out = out as *mut Poll<Result<F::Output, Error>>;
    let (header, stage) = cell::<F>(ptr);
    if header.busy.get() {
        // Only the task's own future can be running now: it awaits itself.
        *out = Poll::Ready(Err(Error::AwaitedItself));
        return;
    }
    match &*stage {
        Stage::Running(_) => {
            header.register_joiner(cx.waker());
            *out = Poll::Pending;
        }
        Stage::Done(_) => match ptr::replace(stage, Stage::Consumed) {
            Stage::Done(result) => *out = Poll::Ready(result),
            _ => unreachable!("matched Done"),
        },
        Stage::Consumed => *out = Poll::Ready(Err(Error::Cancelled)),
    }
}

unsafe fn drop_output<F: Future>(ptr: NonNull<Header>) {
    // SAFETY: the vtable's contract; `busy` is checked before the stage is read.
    let (header, stage) = cell::<F>(ptr);
    if header.busy.get() || !matches!(&*stage, Stage::Done(_)) {
        return;
    }
    let done = ptr::replace(stage, Stage::Consumed);
    if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(done))) {
        let msg = panic_message(&*payload);
        drop_payload(payload);
        let name = (header.vtable.name)();
        let reported = current::local_loop_for(&header.shared).map(|lp| {
            lp.inner
                .report_panic("task output destructor", name, msg.clone())
        });
        if reported.is_none() {
            log::error!("the output of task {name} panicked when dropped: {msg}");
        }
    }
}

unsafe fn is_finished<F: Future>(ptr: NonNull<Header>) -> bool {
    // SAFETY: the vtable's contract; `busy` is checked before the stage is read.
    let (header, stage) = cell::<F>(ptr);
    !header.busy.get() && !matches!(&*stage, Stage::Running(_))
}

unsafe fn failure<F: Future>(ptr: NonNull<Header>) -> Option<Failure> {
    // SAFETY: the vtable's contract; `busy` is checked before the stage is read.
    let (header, stage) = cell::<F>(ptr);
    // No reference to the stage while busy: the future may be borrowed mutably
    // (polled) or half dropped.
    if header.busy.get() {
        return None;
    }
    match &*stage {
        Stage::Done(Err(Error::Cancelled)) => Some(Failure::Cancelled),
        Stage::Done(Err(_)) => Some(Failure::Error),
        _ => None,
    }
}

unsafe fn dealloc<F: Future>(ptr: NonNull<Header>) {
    // SAFETY: called with the last reference: nothing else can reach the cell, and
    // it was allocated by `allocate` as a `Box<TaskCell<F>>`.
    let cell = ptr.cast::<TaskCell<F>>().as_ptr();
    if !matches!(&**(*cell).stage.get(), Stage::Consumed) {
        // Unreachable by the reference rules above. Were it reached, freeing the
        // memory of a future that was never dropped would break Pin's promise (and
        // dropping it here could be on the wrong thread): keep it, leaked.
        debug_assert!(false, "a task was freed with its future or output alive");
        return;
    }
    // The stage is Consumed (nothing to drop); the header's Arc is dropped here.
    drop(Box::from_raw(cell));
}

/// Drops `value` (user code), reporting a panicking destructor.
fn drop_reporting<T>(lp: &LoopInner, header: &Header, value: T) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(value))) {
        let msg = panic_message(&*payload);
        drop_payload(payload);
        lp.report_panic("task output destructor", (header.vtable.name)(), msg);
    }
}

/// Drops a panic payload, which is user data too: a payload whose own destructor
/// panics is leaked rather than allowed to unwind into the loop.
pub(crate) fn drop_payload(payload: Box<dyn std::any::Any + Send>) {
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
}
