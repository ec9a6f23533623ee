//! The deadline queue behind `call_later` / `call_at`, and [`TimerHandle`].
//!
//! A priority queue keyed by `(deadline, sequence number)`: equal deadlines fire in the
//! order they were scheduled. Cancelling drops the callback at once but leaves an
//! empty shell in the heap (lazy deletion); the heap is compacted in one pass when
//! shells make up half of it.
//!
//! Two kinds of timer share the heap: `call_later` callbacks, which the loop moves to
//! the ready queue when due, and [`Sleep`](crate::time::Sleep)s, whose entry (a slab
//! slot holding the waker) belongs to the `Sleep`: a due sleep wakes its task
//! directly, in the same iteration, and moving its deadline needs no allocation.
//! The queue itself is a radix heap ([`super::radix_heap`]): exact order, and pushes
//! and pops without a binary heap's log-n sift (see BENCHMARKS.md).

use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt;
use std::rc::{Rc, Weak};
use std::task::Waker;
use std::time::{Duration, Instant};

use slab::Slab;

use super::radix_heap::{Entry, RadixHeap};
use super::ready::{Ready, Runnable};

/// How far away "never" is: deadlines past `now + FAR_FUTURE` are clamped to it, so
/// `Duration::MAX` delays do not overflow `Instant`.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Below this many shells a compaction is not worth it.
const MIN_COMPACT: usize = 256;

/// `now + delay`, clamped to a far-away deadline instead of overflowing.
pub(crate) fn deadline_after(now: Instant, delay: Duration) -> Instant {
    now.checked_add(delay.min(FAR_FUTURE))
        .unwrap_or_else(|| now + FAR_FUTURE)
}

/// A timer: a `call_later` callback, or the entry of a `Sleep`.
struct Slot {
    /// The sequence number of its live heap entry.
    seq: u64,
    kind: Kind,
}

enum Kind {
    /// Moved to the ready queue when due (its slot is freed then).
    Callback(Rc<dyn Runnable>),
    /// Belongs to a `Sleep`, which frees it when dropped; a due one wakes its task.
    Sleep { waker: Option<Waker>, fired: bool },
}

/// The loop's pending timers.
pub(crate) struct TimerQueue {
    heap: RadixHeap,
    slots: Slab<Slot>,
    epoch: Instant,
    next_seq: u64,
    /// Timers cancelled while in the heap (an upper bound: a timer cancelled after it
    /// moved to the ready queue is counted too; compaction resets it).
    cancelled: Rc<Cell<usize>>,
}

impl TimerQueue {
    pub(crate) fn new() -> Self {
        TimerQueue {
            heap: RadixHeap::new(),
            slots: Slab::new(),
            // Far enough back that no deadline precedes it (a past `call_at` keeps its
            // order), near enough that `FAR_FUTURE` still fits in a u64 of ns.
            epoch: {
                let now = Instant::now();
                now.checked_sub(FAR_FUTURE).unwrap_or(now)
            },
            next_seq: 0,
            cancelled: Rc::new(Cell::new(0)),
        }
    }

    /// `when` on the queue's clock (exact: both are nanoseconds).
    fn ns(&self, when: Instant) -> u64 {
        let since = when.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(since).unwrap_or(u64::MAX)
    }

    /// Pushes the live heap entry of `slot` at `when`; returns its sequence number.
    fn push_entry(&mut self, when: Instant, slot: usize) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let slot = u32::try_from(slot).expect("more than 4 billion pending timers");
        self.heap.push(Entry {
            at: self.ns(when),
            seq,
            slot,
        });
        seq
    }

    fn insert(&mut self, when: Instant, kind: Kind) -> usize {
        let key = self.slots.insert(Slot { seq: 0, kind });
        let seq = self.push_entry(when, key);
        self.slots[key].seq = seq;
        self.maybe_compact();
        key
    }

    /// Schedules `entry` at `when` and returns its handle.
    pub(crate) fn push(&mut self, when: Instant, entry: Rc<dyn Runnable>) -> TimerHandle {
        let handle = TimerHandle {
            entry: entry.clone(),
            when,
            cancelled_count: Rc::downgrade(&self.cancelled),
        };
        self.insert(when, Kind::Callback(entry));
        handle
    }

    /// Arms a sleep's entry at `when`, to wake `waker`; returns the entry's key.
    pub(crate) fn insert_sleep(&mut self, when: Instant, waker: Waker) -> usize {
        self.insert(
            when,
            Kind::Sleep {
                waker: Some(waker),
                fired: false,
            },
        )
    }

    /// Moves a sleep's deadline (fired or not): it fires again at `when`.
    pub(crate) fn reset_sleep(&mut self, key: usize, when: Instant) {
        let Some(Slot {
            kind: Kind::Sleep { fired, .. },
            ..
        }) = self.slots.get(key)
        else {
            return;
        };
        if !*fired {
            // Its old heap entry is a shell now.
            self.cancelled.set(self.cancelled.get() + 1);
        }
        let seq = self.push_entry(when, key);
        let slot = &mut self.slots[key];
        slot.seq = seq;
        if let Kind::Sleep { fired, .. } = &mut slot.kind {
            *fired = false;
        }
        self.maybe_compact();
    }

    /// Whether a sleep has fired; if not, `waker` is the one it will wake.
    pub(crate) fn poll_sleep(&mut self, key: usize, waker: &Waker) -> bool {
        let Some(Slot {
            kind: Kind::Sleep { waker: slot, fired },
            ..
        }) = self.slots.get_mut(key)
        else {
            // Gone with its loop's close: it will never fire.
            return false;
        };
        if *fired {
            return true;
        }
        match slot {
            Some(w) if w.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
        false
    }

    /// Frees a sleep's entry (the `Sleep` was dropped). Returns its waker, for the
    /// caller to drop outside the borrow.
    pub(crate) fn remove_sleep(&mut self, key: usize) -> Option<Waker> {
        if !matches!(
            self.slots.get(key),
            Some(Slot {
                kind: Kind::Sleep { .. },
                ..
            })
        ) {
            return None;
        }
        match self.slots.remove(key).kind {
            Kind::Sleep { waker, fired } => {
                if !fired {
                    self.cancelled.set(self.cancelled.get() + 1);
                }
                waker
            }
            Kind::Callback(_) => unreachable!("checked above"),
        }
    }

    fn is_live(&self, entry: &Entry) -> bool {
        is_live(&self.slots, entry)
    }

    /// The earliest deadline of a live timer, dropping cancelled shells on top.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(&top) = self.heap.peek() {
            if self.is_live(&top) {
                return Some(self.epoch + Duration::from_nanos(top.at));
            }
            self.heap.pop();
            self.free_callback_shell(&top);
        }
        None
    }

    /// A popped shell of a cancelled callback still holds its slot: free it.
    fn free_callback_shell(&mut self, shell: &Entry) {
        free_callback_shell(&mut self.slots, shell);
    }

    /// Moves every live callback timer due at `now` into `ready` and the waker of
    /// every due sleep into `wake`, in deadline order. Returns how many fired.
    pub(crate) fn move_due(
        &mut self,
        now: Instant,
        ready: &mut VecDeque<Ready>,
        wake: &mut Vec<Waker>,
    ) -> usize {
        // Cancellations come in bursts: dropping the shells in one pass beats
        // popping them one by one.
        self.maybe_compact();
        let now = self.ns(now);
        let mut moved = 0;
        while let Some(&top) = self.heap.peek() {
            if top.at > now {
                break;
            }
            self.heap.pop();
            let key = top.slot as usize;
            let slot = match self.slots.get_mut(key) {
                Some(slot) if slot.seq == top.seq => slot,
                _ => continue,
            };
            match &mut slot.kind {
                Kind::Callback(_) => {
                    let Kind::Callback(cb) = self.slots.remove(key).kind else {
                        unreachable!("matched a callback")
                    };
                    if !cb.is_cancelled() {
                        ready.push_back(Ready::Entry(cb));
                        moved += 1;
                    }
                }
                Kind::Sleep { waker, fired } => {
                    if !*fired {
                        *fired = true;
                        wake.extend(waker.take());
                        moved += 1;
                    }
                }
            }
        }
        moved
    }

    /// Live and cancelled timers still in the heap.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Removes every timer and returns the callbacks and the sleeps' wakers (for the
    /// loop to drop outside its borrows). The sleeps never fire after this.
    pub(crate) fn take_all(&mut self) -> (Vec<Rc<dyn Runnable>>, Vec<Waker>) {
        self.cancelled.set(0);
        self.heap.clear();
        let mut callbacks = Vec::new();
        let mut wakers = Vec::new();
        for (_, slot) in std::mem::take(&mut self.slots) {
            match slot.kind {
                Kind::Callback(cb) => callbacks.push(cb),
                Kind::Sleep { waker, .. } => wakers.extend(waker),
            }
        }
        (callbacks, wakers)
    }

    fn maybe_compact(&mut self) {
        let cancelled = self.cancelled.get();
        if cancelled >= MIN_COMPACT && cancelled * 2 >= self.heap.len() {
            // In place: no allocation.
            let slots = &mut self.slots;
            self.heap.retain(|e| {
                let live = is_live(slots, e);
                if !live {
                    free_callback_shell(slots, e);
                }
                live
            });
            self.cancelled.set(0);
        }
    }
}

/// Whether `entry` is its timer's live heap entry (not a shell).
fn is_live(slots: &Slab<Slot>, entry: &Entry) -> bool {
    match slots.get(entry.slot as usize) {
        Some(slot) if slot.seq == entry.seq => match &slot.kind {
            Kind::Callback(cb) => !cb.is_cancelled(),
            Kind::Sleep { fired, .. } => !fired,
        },
        _ => false,
    }
}

/// Frees the slot of a cancelled callback whose shell this is (a sleep's slot
/// belongs to its `Sleep`).
fn free_callback_shell(slots: &mut Slab<Slot>, shell: &Entry) {
    let key = shell.slot as usize;
    if matches!(slots.get(key), Some(s) if s.seq == shell.seq && matches!(s.kind, Kind::Callback(_)))
    {
        slots.remove(key);
    }
}

/// A callback scheduled with [`EventLoop::call_later`](crate::EventLoop::call_later) or
/// [`EventLoop::call_at`](crate::EventLoop::call_at).
///
/// ```
/// use std::time::Duration;
/// let lp = shardloop::new_event_loop()?;
/// let t = lp.call_later(Duration::from_secs(3600), || unreachable!())?;
/// let when = t.when();
/// t.cancel();
/// assert!(t.cancelled());
/// assert_eq!(t.when(), when);
/// # Ok::<(), shardloop::Error>(())
/// ```
#[derive(Clone)]
pub struct TimerHandle {
    entry: Rc<dyn Runnable>,
    when: Instant,
    cancelled_count: Weak<Cell<usize>>,
}

impl TimerHandle {
    /// Cancels the timer: the callback will not run, and it is dropped now. Idempotent.
    pub fn cancel(&self) {
        if self.entry.cancel() {
            if let Some(count) = self.cancelled_count.upgrade() {
                count.set(count.get() + 1);
            }
        }
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn cancelled(&self) -> bool {
        self.entry.is_cancelled()
    }

    /// The deadline it was scheduled for; unchanged by cancelling or firing.
    pub fn when(&self) -> Instant {
        self.when
    }
}

impl fmt::Debug for TimerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerHandle")
            .field("callback", &self.entry.name())
            .field("when", &self.when)
            .field("cancelled", &self.cancelled())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event_loop::ready::callback;
    use proptest::prelude::*;
    use std::cell::RefCell;

    #[derive(Debug, Clone)]
    enum Op {
        Schedule(u8),
        /// A deadline in the past (a late `call_at`).
        ScheduleBack(u8),
        Cancel(usize),
        Advance(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => any::<u8>().prop_map(Op::Schedule),
            1 => any::<u8>().prop_map(Op::ScheduleBack),
            2 => any::<usize>().prop_map(Op::Cancel),
            2 => any::<u8>().prop_map(Op::Advance),
        ]
    }

    proptest! {
        /// The queue fires exactly the live timers whose deadline has passed, in
        /// (deadline, scheduling order), the same as a sorted-list model.
        #[test]
        fn matches_a_sorted_model(ops in proptest::collection::vec(op(), 1..400)) {
            let base = Instant::now();
            let lp = crate::EventLoop::new().unwrap();
            let mut q = TimerQueue::new();
            let fired = Rc::new(RefCell::new(Vec::new()));
            let mut handles = Vec::new();
            // Model: (when offset, id, cancelled, fired).
            let mut model: Vec<(u32, usize, bool, bool)> = Vec::new();
            let mut now = 0u32;
            for op in ops {
                match op {
                    Op::Schedule(_) | Op::ScheduleBack(_) => {
                        let id = handles.len();
                        let when = match op {
                            Op::ScheduleBack(d) => now.saturating_sub(u32::from(d)),
                            Op::Schedule(d) => now + u32::from(d),
                            _ => unreachable!(),
                        };
                        let log = fired.clone();
                        let h = q.push(
                            base + Duration::from_micros(when.into()),
                            callback(move || log.borrow_mut().push(id)),
                        );
                        handles.push(h);
                        model.push((when, id, false, false));
                    }
                    Op::Cancel(i) if !handles.is_empty() => {
                        let i = i % handles.len();
                        handles[i].cancel();
                        if !model[i].3 {
                            model[i].2 = true;
                        }
                    }
                    Op::Cancel(_) => {}
                    Op::Advance(d) => {
                        now += u32::from(d);
                        let mut ready = VecDeque::new();
                        q.move_due(base + Duration::from_micros(now.into()), &mut ready, &mut Vec::new());
                        for r in ready {
                            if let Ready::Entry(entry) = r {
                                entry.run(&lp.inner);
                            }
                        }
                        let mut due: Vec<_> = model
                            .iter_mut()
                            .filter(|m| !m.2 && !m.3 && m.0 <= now)
                            .collect();
                        due.sort_by_key(|m| (m.0, m.1));
                        let expected: Vec<usize> = due.iter_mut().map(|m| { m.3 = true; m.1 }).collect();
                        let got: Vec<usize> = fired.borrow_mut().drain(..).collect();
                        prop_assert_eq!(got, expected);
                    }
                }
                let live_next = model.iter().filter(|m| !m.2 && !m.3).map(|m| m.0).min();
                prop_assert_eq!(
                    q.next_deadline(),
                    live_next.map(|w| base + Duration::from_micros(w.into()))
                );
            }
        }
    }

    /// A waker that logs `id` when woken.
    struct LogWake {
        id: usize,
        log: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
    }
    impl std::task::Wake for LogWake {
        fn wake(self: std::sync::Arc<Self>) {
            self.log.lock().unwrap().push(self.id);
        }
    }

    #[derive(Debug, Clone)]
    enum SleepOp {
        /// A sleep armed `d` from now (or `d` ago, when the flag is set).
        Arm(u8, bool),
        /// `Sleep::reset` of the i-th sleep to `d` from now.
        Reset(usize, u8),
        /// The i-th sleep is dropped.
        Drop(usize),
        /// A callback timer `d` from now, cancelled at once when the flag is set.
        Callback(u8, bool),
        Advance(u8),
    }

    fn sleep_op() -> impl Strategy<Value = SleepOp> {
        prop_oneof![
            4 => (any::<u8>(), proptest::bool::weighted(0.1)).prop_map(|(d, b)| SleepOp::Arm(d, b)),
            2 => (any::<usize>(), any::<u8>()).prop_map(|(i, d)| SleepOp::Reset(i, d)),
            2 => any::<usize>().prop_map(SleepOp::Drop),
            2 => (any::<u8>(), any::<bool>()).prop_map(|(d, b)| SleepOp::Callback(d, b)),
            3 => any::<u8>().prop_map(SleepOp::Advance),
        ]
    }

    proptest! {
        /// Sleeps (armed, reset, fired, reset again after firing, dropped) and
        /// callback timers share the queue: every due sleep fires once at its
        /// latest deadline, in (deadline, order of the latest arm or reset) order
        /// with the callbacks, and a dropped or superseded entry never fires.
        #[test]
        fn sleeps_and_callbacks_match_a_model(ops in proptest::collection::vec(sleep_op(), 1..300)) {
            let base = Instant::now() + Duration::from_secs(1);
            let lp = crate::EventLoop::new().unwrap();
            let mut q = TimerQueue::new();
            let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            // Model entries: (when, seq, id, kind live?) where ids of sleeps are
            // their index and callbacks are 10_000 + index.
            struct M { when: u32, seq: u64, id: usize, live: bool }
            let mut model: Vec<M> = Vec::new();
            let mut sleeps: Vec<Option<usize>> = Vec::new(); // key per sleep index
            let mut seq = 0u64;
            let mut now = 1000u32;
            let at = |t: u32| base + Duration::from_micros(t.into());
            for op in ops {
                match op {
                    SleepOp::Arm(d, past) => {
                        let id = sleeps.len();
                        let when = if past { now.saturating_sub(u32::from(d)) } else { now + u32::from(d) };
                        let waker = Waker::from(std::sync::Arc::new(LogWake { id, log: log.clone() }));
                        sleeps.push(Some(q.insert_sleep(at(when), waker)));
                        model.push(M { when, seq, id, live: true });
                        seq += 1;
                    }
                    SleepOp::Reset(i, d) if !sleeps.is_empty() => {
                        let i = i % sleeps.len();
                        if let Some(key) = sleeps[i] {
                            let when = now + u32::from(d);
                            q.reset_sleep(key, at(when));
                            model.iter_mut().filter(|m| m.id == i).for_each(|m| m.live = false);
                            model.push(M { when, seq, id: i, live: true });
                            seq += 1;
                            // A fired sleep polls again with its waker after a reset.
                            let waker = Waker::from(std::sync::Arc::new(LogWake { id: i, log: log.clone() }));
                            prop_assert!(!q.poll_sleep(key, &waker));
                        }
                    }
                    SleepOp::Drop(i) if !sleeps.is_empty() => {
                        let i = i % sleeps.len();
                        if let Some(key) = sleeps[i].take() {
                            drop(q.remove_sleep(key));
                            model.iter_mut().filter(|m| m.id == i).for_each(|m| m.live = false);
                        }
                    }
                    SleepOp::Reset(..) | SleepOp::Drop(_) => {}
                    SleepOp::Callback(d, cancel) => {
                        let id = 10_000 + model.len();
                        let when = now + u32::from(d);
                        let l = log.clone();
                        let h = q.push(at(when), callback(move || l.lock().unwrap().push(id)));
                        if cancel {
                            h.cancel();
                        }
                        model.push(M { when, seq, id, live: !cancel });
                        seq += 1;
                    }
                    SleepOp::Advance(d) => {
                        now += u32::from(d);
                        let mut ready = VecDeque::new();
                        let mut wake = Vec::new();
                        q.move_due(at(now), &mut ready, &mut wake);
                        // The loop wakes due sleeps and runs due callbacks; the model
                        // orders them all by (deadline, seq), so collect in that order:
                        // move_due yields both kinds in one pass, in order.
                        let mut due: Vec<&mut M> = model.iter_mut().filter(|m| m.live && m.when <= now).collect();
                        due.sort_by_key(|m| (m.when, m.seq));
                        let expected_sleeps: Vec<usize> = due.iter().filter(|m| m.id < 10_000).map(|m| m.id).collect();
                        let expected_cbs: Vec<usize> = due.iter().filter(|m| m.id >= 10_000).map(|m| m.id).collect();
                        due.into_iter().for_each(|m| m.live = false);
                        wake.into_iter().for_each(Waker::wake);
                        let got_sleeps: Vec<usize> = log.lock().unwrap().drain(..).collect();
                        for r in ready {
                            if let Ready::Entry(entry) = r {
                                entry.run(&lp.inner);
                            }
                        }
                        let got_cbs: Vec<usize> = log.lock().unwrap().drain(..).collect();
                        prop_assert_eq!(got_sleeps, expected_sleeps);
                        prop_assert_eq!(got_cbs, expected_cbs);
                        // A fired sleep says so when polled; others do not.
                        for (i, key) in sleeps.iter().enumerate() {
                            if let Some(key) = key {
                                let waker = Waker::from(std::sync::Arc::new(LogWake { id: i, log: log.clone() }));
                                let pending = model.iter().any(|m| m.id == i && m.live);
                                prop_assert_eq!(q.poll_sleep(*key, &waker), !pending);
                            }
                        }
                    }
                }
                let live_next = model.iter().filter(|m| m.live).map(|m| m.when).min();
                prop_assert_eq!(q.next_deadline(), live_next.map(at));
            }
        }
    }

    #[test]
    fn huge_delays_clamp_instead_of_overflowing() {
        let now = Instant::now();
        let far = deadline_after(now, Duration::MAX);
        assert!(far > now + Duration::from_secs(365 * 24 * 3600));
    }

    #[test]
    fn compaction_drops_cancelled_shells() {
        let mut q = TimerQueue::new();
        let now = Instant::now();
        let handles: Vec<_> = (0..1000)
            .map(|i| q.push(now + Duration::from_secs(i), callback(|| ())))
            .collect();
        for h in &handles[..900] {
            h.cancel();
        }
        q.push(now, callback(|| ()));
        assert!(q.len() <= 101, "heap still holds {} entries", q.len());
    }
}
