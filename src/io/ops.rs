//! The proactor's operations in flight: reads and writes the kernel does for us
//! (`IORING_OP_RECV`, `IORING_OP_SEND`, and for datagrams `IORING_OP_RECVMSG`,
//! `IORING_OP_SENDMSG`), each with the buffer it reads into or writes from (and a
//! message's header and address).
//!
//! The table owns every buffer the kernel may touch, from the submission until the
//! completion arrives, whatever happens to the future that asked. A future dropped
//! before its completion leaves its operation here, marked orphaned, and a cancel is
//! sent; the buffer is freed only when the kernel has answered. So the kernel never
//! writes into, or reads from, memory that was freed or reused.

use std::ptr::NonNull;
use std::task::{Context, Poll};

use mio::Token;
use slab::Slab;

use super::wakers::{WaitList, Wakers};

/// Where an operation is.
enum State {
    /// In the kernel; the tasks to wake when it completes (nearly always one: a
    /// second waits only when two tasks read one stream).
    Waiting(WaitList),
    /// Completed with this result (bytes, or a negative errno), not yet collected.
    Done(i32),
    /// In the kernel, but nobody waits for it any more: freed when it completes.
    Orphaned,
}

struct Slot {
    state: State,
    /// The memory the operation uses, kept alive (never moved: a `Vec`'s heap block
    /// stays where it is when the `Vec` itself moves) until the completion.
    buf: Vec<u8>,
    /// A `RECVMSG`'s or `SENDMSG`'s header, iovec and address, kept as the buffer is.
    msg: Option<MsgBox>,
    /// The transport told of the completion (as readiness of this token), for a
    /// protocol's send; none for a task's operation, which its waiters are.
    sink: Option<Token>,
}

/// What a `RECVMSG` or `SENDMSG` points to besides its bytes: the message header,
/// its one iovec (into the operation's buffer) and the peer's address.
pub(crate) struct MsgParts {
    pub(crate) hdr: libc::msghdr,
    pub(crate) iov: libc::iovec,
    pub(crate) addr: libc::sockaddr_storage,
}

/// A [`MsgParts`] on the heap, owned through a raw pointer, so that it stays where
/// the kernel was told it is while the table moves its owner around. (Moving a `Box`
/// would, in Rust's aliasing model, invalidate the pointers the kernel holds into
/// it; moving a raw pointer does not.)
pub(crate) struct MsgBox(NonNull<MsgParts>);

impl MsgBox {
    /// Zeroed parts: no address, no iovec yet.
    pub(crate) fn new() -> MsgBox {
        // SAFETY: all three are plain C structs (integers and raw pointers), for
        // which all-zero bytes are a valid value: null pointers and zero lengths.
        let parts: Box<MsgParts> = Box::new(unsafe { std::mem::zeroed() });
        MsgBox(NonNull::from(Box::leak(parts)))
    }

    /// The parts, for pointers into them (taken from this, not from a reference).
    pub(crate) fn as_ptr(&self) -> *mut MsgParts {
        self.0.as_ptr()
    }

    /// The parts, to read. No operation is in flight on them: while one is, the ops
    /// table owns this, and nobody else can call it.
    pub(crate) fn parts(&self) -> &MsgParts {
        // SAFETY: the pointer is to a live allocation this owns, and no one writes
        // to it now (see above).
        unsafe { self.0.as_ref() }
    }
}

impl Drop for MsgBox {
    fn drop(&mut self) {
        // SAFETY: the pointer came from `Box::leak` in `new`, and is freed once, here.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

/// A key into the table: the operation's `user_data` is built from it.
pub(crate) type OpKey = usize;

#[derive(Default)]
pub(crate) struct Ops {
    slots: Slab<Slot>,
}

impl Ops {
    /// Records an operation about to be submitted, owning `buf`; its key.
    pub(crate) fn insert(&mut self, buf: Vec<u8>, sink: Option<Token>) -> OpKey {
        self.slots.insert(Slot {
            state: State::Waiting(WaitList::default()),
            buf,
            msg: None,
            sink,
        })
    }

    /// Records a `RECVMSG` or `SENDMSG` about to be submitted, owning `buf` and
    /// `msg`; its key.
    pub(crate) fn insert_msg(&mut self, buf: Vec<u8>, msg: MsgBox) -> OpKey {
        self.slots.insert(Slot {
            state: State::Waiting(WaitList::default()),
            buf,
            msg: Some(msg),
            sink: None,
        })
    }

    /// The parts of an operation that could not be submitted after all, back to
    /// its owner.
    pub(crate) fn remove_unsubmitted_msg(&mut self, key: OpKey) -> (Vec<u8>, MsgBox) {
        let slot = self.slots.remove(key);
        (slot.buf, slot.msg.expect("a message operation"))
    }

    /// The buffer of an operation that could not be submitted after all (it never
    /// reached the kernel), back to its owner.
    pub(crate) fn remove_unsubmitted(&mut self, key: OpKey) -> Vec<u8> {
        self.slots.remove(key).buf
    }

    /// The result and the buffer, once the operation completed; else `cx` is woken
    /// when it does.
    pub(crate) fn poll(&mut self, key: OpKey, cx: &mut Context<'_>) -> Poll<(i32, Vec<u8>)> {
        self.poll_msg(key, cx).map(|(result, buf, _)| (result, buf))
    }

    /// [`poll`](Self::poll) for a message operation, whose parts come back too.
    pub(crate) fn poll_msg(
        &mut self,
        key: OpKey,
        cx: &mut Context<'_>,
    ) -> Poll<(i32, Vec<u8>, Option<MsgBox>)> {
        let slot = self.slots.get_mut(key).expect("a live operation");
        match &mut slot.state {
            State::Done(result) => {
                let result = *result;
                let slot = self.slots.remove(key);
                Poll::Ready((result, slot.buf, slot.msg))
            }
            State::Waiting(waiting) => {
                waiting.add(cx.waker());
                Poll::Pending
            }
            State::Orphaned => unreachable!("an orphaned operation has no future to poll it"),
        }
    }

    /// Nobody will collect the operation. Returns true if it is still in the kernel
    /// (the caller cancels it; the slot stays until the completion comes); a completed
    /// one is freed at once.
    ///
    /// The wakers it held come back in `Wakers`, to be dropped (not woken) once the
    /// table is no longer borrowed.
    pub(crate) fn orphan(&mut self, key: OpKey) -> (bool, Wakers) {
        let slot = self.slots.get_mut(key).expect("a live operation");
        if let State::Done(_) = slot.state {
            self.slots.remove(key);
            return (false, Wakers::default());
        }
        match std::mem::replace(&mut slot.state, State::Orphaned) {
            State::Waiting(mut waiting) => (true, waiting.take()),
            _ => (true, Wakers::default()),
        }
    }

    /// The result and buffer of operation `key` if it completed (the slot is freed).
    pub(crate) fn take_done(&mut self, key: OpKey) -> Option<(i32, Vec<u8>)> {
        match self.slots.get(key)?.state {
            State::Done(result) => Some((result, self.slots.remove(key).buf)),
            _ => None,
        }
    }

    /// The keys of the operations still in the kernel.
    pub(crate) fn in_flight_keys(&self) -> Vec<OpKey> {
        self.slots
            .iter()
            .filter(|(_, s)| !matches!(s.state, State::Done(_)))
            .map(|(key, _)| key)
            .collect()
    }

    /// The wakers of every operation waited for, taken out (the operations stay).
    pub(crate) fn take_wakers(&mut self) -> Vec<Wakers> {
        self.slots
            .iter_mut()
            .filter_map(|(_, s)| match &mut s.state {
                State::Waiting(waiting) => Some(waiting.take()),
                _ => None,
            })
            .collect()
    }

    /// Whether `key` is still in the table (an orphan that has not completed yet).
    pub(crate) fn contains(&self, key: OpKey) -> bool {
        self.slots.contains(key)
    }

    /// Whether operation `key` completed (and is not collected yet).
    pub(crate) fn is_done(&self, key: OpKey) -> bool {
        self.slots.get(key).is_some_and(|s| matches!(s.state, State::Done(_)))
    }

    /// The length of operation `key`'s buffer (0 for a key not in the table).
    pub(crate) fn buf_len(&self, key: OpKey) -> usize {
        self.slots.get(key).map_or(0, |s| s.buf.len())
    }

    /// Whether operation `key` completed and is still `sink`'s to collect (a report
    /// filed before it was collected or orphaned is dropped).
    pub(crate) fn reports_to(&self, key: OpKey, sink: Token) -> bool {
        self.slots
            .get(key)
            .is_some_and(|s| matches!(s.state, State::Done(_)) && s.sink == Some(sink))
    }

    /// The kernel completed operation `key` with `result`: the wakers of its tasks,
    /// to be woken once no borrow of the table is held, and the sink to tell. An
    /// orphan is freed now.
    pub(crate) fn complete(&mut self, key: OpKey, result: i32) -> (Wakers, Option<Token>) {
        let Some(slot) = self.slots.get_mut(key) else {
            return (Wakers::default(), None);
        };
        match std::mem::replace(&mut slot.state, State::Done(result)) {
            State::Waiting(mut waiting) => (waiting.take(), slot.sink),
            State::Orphaned => {
                self.slots.remove(key);
                (Wakers::default(), None)
            }
            State::Done(_) => unreachable!("an operation completes once"),
        }
    }

    /// Operations still in the kernel (waited for or orphaned).
    pub(crate) fn in_flight(&self) -> usize {
        self.slots
            .iter()
            .filter(|(_, s)| !matches!(s.state, State::Done(_)))
            .count()
    }

    /// The bytes of buffer the kernel holds for operations still in flight.
    #[cfg(test)]
    pub(crate) fn lent(&self) -> usize {
        self.slots
            .iter()
            .filter(|(_, s)| !matches!(s.state, State::Done(_)))
            .map(|(_, s)| s.buf.capacity())
            .sum()
    }

    /// Gives up on the operations still in the kernel without freeing their buffers:
    /// for a ring being torn down whose kernel side did not answer every cancel. A leak
    /// is safe; freeing memory the kernel may still write is not.
    pub(crate) fn leak_in_flight(&mut self) -> usize {
        let mut leaked = 0;
        for slot in self.slots.drain() {
            if matches!(slot.state, State::Done(_)) {
                continue;
            }
            std::mem::forget(slot.buf);
            std::mem::forget(slot.msg);
            leaked += 1;
        }
        leaked
    }
}
