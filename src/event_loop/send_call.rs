//! [`SendCall`]: a `FnOnce() + Send` that crosses threads into a loop without a heap
//! allocation when its captures fit in six words (most do: an `Arc`, a few
//! integers), boxed otherwise.
//!
//! A `Box<dyn FnOnce() + Send>` per `call_soon_threadsafe` is a `malloc` on the
//! sending thread and a `free` on the loop's: with several senders, glibc's arenas
//! then spend more time than the inbox itself (a third of the samples of the
//! 8-producer benchmark). Stored inline, the closure travels by value through the
//! inbox's `Vec` and the loop's mail queue instead.

use std::marker::PhantomData;
use std::mem::{align_of, size_of, ManuallyDrop, MaybeUninit};
use std::ptr;

/// The inline storage: six words, word-aligned.
type Slot = MaybeUninit<[usize; 6]>;

/// What knows the closure's type.
///
/// SAFETY (the contract of both entries): called once, with a pointer to a `Slot`
/// that holds a live closure of this vtable's type; the closure is moved out
/// (`call`) or dropped (`drop`) there, and the slot must not be used again.
struct Vtable {
    /// Moves the closure out of the slot and calls it (SAFETY: the contract above).
    call: unsafe fn(*mut Slot),
    /// Drops the closure in the slot (SAFETY: the contract above).
    drop: unsafe fn(*mut Slot),
    name: fn() -> &'static str,
}

/// A threadsafe callback, stored in place.
pub(crate) struct SendCall {
    vtable: &'static Vtable,
    slot: Slot,
    /// Not `Send` nor `Sync` by itself (the slot's words say nothing of what they
    /// hold): `Send` is granted below, for what `new` admits.
    _erased: PhantomData<*mut ()>,
}

// SAFETY: `new` only takes `Send` closures, and the slot holds nothing else. (Not
// `Sync`: nothing needs it.)
unsafe impl Send for SendCall {}

impl SendCall {
    /// Wraps `f`: in place if it fits the slot's size and alignment, else boxed (the
    /// box is one word, so it fits).
    pub(crate) fn new<F: FnOnce() + Send + 'static>(f: F) -> SendCall {
        if fits::<F>() {
            SendCall::in_place(f)
        } else {
            // A `Box<F>` is itself a `FnOnce`, one word long.
            SendCall::in_place(Box::new(f))
        }
    }

    fn in_place<F: FnOnce() + Send + 'static>(f: F) -> SendCall {
        assert!(fits::<F>(), "a closure too large for the slot");
        let mut slot = Slot::uninit();
        // SAFETY: `fits` checked that an `F` fits in the slot and that the slot's
        // alignment (a word) is enough for it; the slot is fresh, so nothing is
        // overwritten.
        unsafe { ptr::write(slot.as_mut_ptr().cast::<F>(), f) };
        SendCall {
            vtable: vtable::<F>(),
            slot,
            _erased: PhantomData,
        }
    }

    /// Runs the closure (consuming it: a panic inside it has moved it out already,
    /// so nothing is dropped twice).
    pub(crate) fn call(self) {
        let mut this = ManuallyDrop::new(self);
        // SAFETY: the slot holds the vtable's closure, and `this` is never dropped,
        // so the closure is moved out exactly once, here.
        unsafe { (this.vtable.call)(&mut this.slot) }
    }

    /// The closure's type name, for reports.
    pub(crate) fn name(&self) -> &'static str {
        (self.vtable.name)()
    }
}

impl Drop for SendCall {
    fn drop(&mut self) {
        // SAFETY: a `SendCall` that is dropped was never called (`call` forgets it),
        // so its slot still holds the closure.
        unsafe { (self.vtable.drop)(&mut self.slot) }
    }
}

const fn fits<F>() -> bool {
    size_of::<F>() <= size_of::<Slot>() && align_of::<F>() <= align_of::<Slot>()
}

fn vtable<F: FnOnce() + Send + 'static>() -> &'static Vtable {
    // A constant promoted to a `'static`: one vtable per closure type.
    trait HasVtable {
        const VTABLE: Vtable;
    }
    impl<F: FnOnce() + Send + 'static> HasVtable for F {
        const VTABLE: Vtable = Vtable {
            call: call::<F>,
            drop: drop_in_slot::<F>,
            name: std::any::type_name::<F>,
        };
    }
    &<F as HasVtable>::VTABLE
}

/// SAFETY: see [`Vtable`].
unsafe fn call<F: FnOnce()>(slot: *mut Slot) {
    // SAFETY: the caller passes a slot holding a live `F` and never touches it again.
    let f = unsafe { ptr::read(slot.cast::<F>()) };
    f();
}

/// SAFETY: see [`Vtable`].
unsafe fn drop_in_slot<F>(slot: *mut Slot) {
    // SAFETY: the caller passes a slot holding a live `F` and never touches it again.
    unsafe { ptr::drop_in_place(slot.cast::<F>()) }
}

#[cfg(test)]
mod tests {
    use super::SendCall;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Counts its drops.
    struct Probe(Arc<AtomicUsize>);
    impl Drop for Probe {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn calls_and_drops_once<const N: usize>() {
        let (ran, dropped) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let probe = (Probe(dropped.clone()), [7u8; N]);
        let r = ran.clone();
        let call = SendCall::new(move || {
            let whole = &probe; // captures the whole tuple, not only its bytes
            assert_eq!(whole.1, [7u8; N]);
            r.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(dropped.load(Ordering::Relaxed), 0);
        // Moving the call moves its captures with it: nothing may point into them.
        let moved = vec![call];
        for c in moved {
            c.call();
        }
        assert_eq!(ran.load(Ordering::Relaxed), 1);
        assert_eq!(dropped.load(Ordering::Relaxed), 1);

        let probe = (Probe(dropped.clone()), [7u8; N]);
        let never = SendCall::new(move || drop(probe));
        drop(never);
        assert_eq!(dropped.load(Ordering::Relaxed), 2, "dropped uncalled, once");
    }

    #[test]
    fn small_closures_run_and_drop_once() {
        calls_and_drops_once::<1>();
        calls_and_drops_once::<32>();
    }

    #[test]
    fn large_closures_are_boxed_and_run_and_drop_once() {
        calls_and_drops_once::<64>();
        calls_and_drops_once::<4096>();
    }

    #[test]
    fn over_aligned_closures_are_boxed() {
        #[repr(align(64))]
        struct Aligned(u8);
        let v = Aligned(5);
        let seen = Arc::new(AtomicUsize::new(0));
        let s = seen.clone();
        SendCall::new(move || {
            assert_eq!(&v as *const Aligned as usize % 64, 0);
            s.store(usize::from(v.0), Ordering::Relaxed);
        })
        .call();
        assert_eq!(seen.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn a_panicking_call_drops_its_captures_once() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let probe = Probe(dropped.clone());
        let call = SendCall::new(move || {
            let _keep = &probe;
            panic!("boom");
        });
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| call.call()));
        assert!(r.is_err());
        assert_eq!(dropped.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn the_name_is_the_closures() {
        let c = SendCall::new(|| ());
        assert!(c.name().contains("send_call"), "{}", c.name());
    }
}
