//! A ring of provided buffers (`IORING_REGISTER_PBUF_RING`): memory the kernel picks
//! from when a receive has bytes to deliver, so that no socket lends the kernel a
//! buffer of its own while it waits (see [`super::recvs`]). A completion
//! names the buffer it used; its bytes are copied out at once and the buffer goes
//! back on the ring.
//!
//! The ring is one page-aligned array of `io_uring_buf` entries (address, length,
//! buffer id) whose tail the kernel reads with acquire ordering; the buffers are one
//! block, `BUFFERS` of `BUFFER_SIZE` bytes, allocated when a loop's first receive
//! needs them.

use std::alloc::{self, Layout};
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::Submitter;

/// Buffers on the ring (a power of two): as many streams can receive in one turn of
/// the loop before the ring runs dry (a receive that finds it empty fails with
/// `ENOBUFS`, and the stream's next read submits it again); 1 MiB in all.
pub(crate) const BUFFERS: u16 = 256;
const _: () = assert!(BUFFERS.is_power_of_two());
/// The bytes of each: a request or a reply usually fits; a bulk transfer takes one
/// completion per buffer.
pub(crate) const BUFFER_SIZE: usize = 4096;
/// The group id of a loop's one ring (its own io_uring: no other ring shares it).
pub(crate) const GROUP: u16 = 0;

/// The kernel wants the ring page-aligned.
fn page_size() -> usize {
    // SAFETY: sysconf reads a system constant; no memory of ours is involved.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(page).ok().filter(|p| p.is_power_of_two()).unwrap_or(4096)
}

/// One entry of the ring, as the kernel reads it (`struct io_uring_buf`). The first
/// entry's last field is not an entry's but the ring's tail: so entries are written
/// field by field through raw pointers, never through a reference (which would claim
/// the tail too while the kernel reads it).
#[repr(C)]
struct Entry {
    addr: u64,
    len: u32,
    bid: u16,
    /// The ring's tail in the first entry; unused in the others.
    tail: u16,
}

const _: () = assert!(std::mem::size_of::<Entry>() == 16, "the kernel's struct io_uring_buf");

/// The registered ring and its buffers. Freed only by [`unregister`](Self::unregister):
/// dropped otherwise, it is leaked (the kernel may still use it).
pub(crate) struct BufRing {
    entries: NonNull<Entry>,
    buffers: NonNull<u8>,
    /// The tail published to the kernel last (the entry after the last buffer given).
    tail: u16,
}

fn entries_layout() -> Layout {
    Layout::from_size_align(BUFFERS as usize * std::mem::size_of::<Entry>(), page_size())
        .expect("a valid layout")
}

fn buffers_layout() -> Layout {
    Layout::from_size_align(BUFFERS as usize * BUFFER_SIZE, page_size()).expect("a valid layout")
}

impl BufRing {
    /// Allocates the ring with every buffer on it and registers it with `submitter`'s
    /// ring as group [`GROUP`].
    pub(crate) fn register(submitter: &Submitter<'_>) -> io::Result<BufRing> {
        // SAFETY: both layouts have a non-zero size.
        let (entries, buffers) = unsafe { (alloc::alloc_zeroed(entries_layout()), alloc::alloc(buffers_layout())) };
        let (Some(entries), Some(buffers)) = (NonNull::new(entries.cast::<Entry>()), NonNull::new(buffers))
        else {
            alloc::handle_alloc_error(entries_layout());
        };
        let mut ring = BufRing {
            entries,
            buffers,
            tail: 0,
        };
        for bid in 0..BUFFERS {
            ring.give(bid);
        }
        // SAFETY: the entries are a page-aligned array of `BUFFERS` (a power of two)
        // initialized entries, each naming a buffer of `BUFFER_SIZE` bytes inside
        // `buffers`; both blocks stay allocated, unmoved, until `unregister` (or are
        // leaked, see the poller's teardown).
        match unsafe { submitter.register_buf_ring_with_flags(entries.as_ptr() as u64, BUFFERS, GROUP, 0) } {
            Ok(()) => Ok(ring),
            Err(e) => {
                ring.free();
                Err(e)
            }
        }
    }

    /// Gives the ring up without freeing it, for a kernel that may still use it.
    pub(crate) fn leak(self) {}

    /// Frees both blocks: the kernel does not know them (not registered, or no more).
    fn free(self) {
        // SAFETY: allocated in `register` with these layouts, freed once (`self` is
        // consumed); the kernel holds no reference to them (the caller's word).
        unsafe {
            alloc::dealloc(self.entries.as_ptr().cast(), entries_layout());
            alloc::dealloc(self.buffers.as_ptr(), buffers_layout());
        }
    }

    /// The first `len` bytes of buffer `bid`, which a completion just handed us: the
    /// kernel wrote them and will not touch the buffer until it is given back.
    pub(crate) fn bytes(&self, bid: u16, len: usize) -> &[u8] {
        assert!(bid < BUFFERS && len <= BUFFER_SIZE, "a buffer of this ring");
        // SAFETY: in bounds (checked above); the kernel initialized `len` bytes there
        // and owns the buffer no more until `give`, which takes `&mut self`.
        unsafe { std::slice::from_raw_parts(self.buffers.as_ptr().add(bid as usize * BUFFER_SIZE), len) }
    }

    /// Puts buffer `bid` back on the ring, for the kernel to fill again.
    pub(crate) fn give(&mut self, bid: u16) {
        assert!(bid < BUFFERS, "a buffer of this ring");
        let slot = (self.tail & (BUFFERS - 1)) as usize;
        // SAFETY: `slot < BUFFERS`: the entry is inside the entries' block. The
        // kernel reads only the entries from its head up to the published tail, and
        // this one is not among them until the store below: every buffer on the ring
        // is one the kernel handed us back first, so at most `BUFFERS` are published
        // and not taken, and the slot's last one was taken. Its three fields are
        // written, not its fourth (the first entry's is the tail). The buffer's
        // address is inside `buffers`.
        unsafe {
            let entry = self.entries.as_ptr().add(slot);
            std::ptr::addr_of_mut!((*entry).addr).write(self.buffers.as_ptr().add(bid as usize * BUFFER_SIZE) as u64);
            std::ptr::addr_of_mut!((*entry).len).write(BUFFER_SIZE as u32);
            std::ptr::addr_of_mut!((*entry).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail is the last field of the first entry: a u16 inside the
        // entries' block, 2-aligned, that only this thread writes and only atomically.
        // The kernel reads it with acquire ordering, so this release store publishes
        // the entry written above.
        let tail = unsafe { AtomicU16::from_ptr(std::ptr::addr_of_mut!((*self.entries.as_ptr()).tail)) };
        tail.store(self.tail, Ordering::Release);
    }

    /// Unregisters the ring and frees it: only once no receive can pick a buffer any
    /// more (none is in the kernel).
    pub(crate) fn unregister(self, submitter: &Submitter<'_>) {
        if let Err(e) = submitter.unregister_buf_ring(GROUP) {
            // Still registered: the kernel may use it; leaked rather than freed.
            log::error!("io_uring: could not unregister the receive buffers ({e}); they are leaked");
            return;
        }
        self.free();
    }
}
