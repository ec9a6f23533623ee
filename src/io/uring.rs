//! The proactor backend's ring (asyncio's `ProactorEventLoop`, on io_uring): one
//! `io_uring_enter` per loop iteration submits every change of interest made since
//! the last one and waits for completions, with the nearest timer's deadline as the
//! wait's own timeout (`IORING_ENTER_EXT_ARG`: no timer fd, no timeout operation to
//! cancel when an event comes first).
//!
//! Readiness comes from multishot `POLL_ADD`s, one per registered fd, each of which
//! completes every time its file is woken (as edge-triggered epoll reports). Each arm
//! carries a number in its `user_data`, so a completion of an arm that was replaced
//! or removed (its fd's token may be reused already) is told apart and ignored.
//!
//! Reads and writes the kernel does for us (the proactor's own way of doing I/O) are
//! the other kind of entry: their buffers live in the [`Ops`] table until their
//! completions arrive (see [`super::ops`]). Listeners' multishot accepts are the
//! third (see [`super::accepts`]), and streams' receives into buffers the kernel
//! picks from the loop's [`BufRing`] the fourth (see [`super::recvs`]).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use mio::{Interest, Token};

use super::accepts::{AcceptKey, Accepts, Next};
use super::buf_ring::{self, BufRing};
use super::ops::{MsgBox, OpKey, Ops};
use super::poller::Readiness;
use super::recvs::{self, RecvKey, Recvs};
use super::wakers::Wakers;

/// The doorbell's token inside the ring (registered tokens are slab keys, far below).
const BELL: u32 = u32::MAX;
/// The bit that marks a `POLL_REMOVE`'s `user_data` (the rest is the `user_data` of
/// the poll it removes, whose arm numbers stay below it).
const REMOVAL: u64 = 1 << 63;
/// The arm numbers: 27 bits, so that a poll's `user_data` (number << 32 | token)
/// never has a bit of [`REMOVAL`], [`OP`], [`CANCEL`], [`ACCEPT`] or [`RECV`].
const ARM_ID_MASK: u32 = u32::MAX >> 5;
/// The bit that marks an operation's `user_data` (the rest is its key in [`Ops`]).
const OP: u64 = 1 << 62;
/// The `user_data` of an `ASYNC_CANCEL`: its own completion says nothing we need (the
/// operation it cancels completes too, and that completion frees it).
const CANCEL: u64 = 1 << 61;
/// The bit that marks a multishot accept's `user_data` (the rest is its key in
/// [`Accepts`]).
const ACCEPT: u64 = 1 << 60;
/// The bit that marks the `user_data` of a receive into the ring's buffers (the
/// rest is its key in [`Recvs`]).
const RECV: u64 = 1 << 59;
/// How many waits a teardown spends on the answers to its cancels (each at most
/// [`TEARDOWN_WAIT`]) before it leaks the buffers still in the kernel.
const TEARDOWN_TRIES: usize = 50;
const TEARDOWN_WAIT: Duration = Duration::from_millis(20);
/// How long `cancel_op` waits for each answer (it tries `REMOVAL_TRIES` times).
const CANCEL_WAIT: Duration = Duration::from_millis(10);
/// How many of those waits `cancel_and_collect` spends (10 s): a stream moving to
/// another loop must not leave a receive behind that could take its bytes.
const DETACH_TRIES: usize = 1000;
/// How often `delete` tries a removal that the kernel answers with `EALREADY` (the
/// poll was just firing) before it leaves the rest to `wait`.
const REMOVAL_TRIES: usize = 8;
/// Submission queue entries by default (`LoopBuilder::ring_entries`); the completion
/// queue is twice as large, and with `IORING_FEAT_NODROP` the kernel keeps what
/// overflows it until it is read.
pub(crate) const DEFAULT_ENTRIES: u32 = 256;
/// The most the kernel takes.
const MAX_ENTRIES: u32 = 32768;

const READ_MASK: u32 = (libc::POLLIN | libc::POLLPRI | libc::POLLRDHUP) as u32;
const WRITE_MASK: u32 = libc::POLLOUT as u32;

/// One fd's live poll.
struct Arm {
    fd: RawFd,
    mask: u32,
    /// Which arm of this token it is (the high half of its `user_data`).
    id: u32,
}

impl Arm {
    fn user_data(&self, token: u32) -> u64 {
        (u64::from(self.id) << 32) | u64::from(token)
    }
}

pub(crate) struct UringPoller {
    ring: RefCell<IoUring>,
    arms: RefCell<HashMap<u32, Arm>>,
    next_id: Cell<u32>,
    /// Poll completions reaped outside `wait` (`reap_early`), for the next `wait`.
    early: RefCell<Vec<(u64, i32, u32)>>,
    /// `wait`'s buffer of completions, kept for its capacity.
    batch: RefCell<Vec<(u64, i32, u32)>>,
    /// Reads and writes in flight, and their buffers.
    ops: RefCell<Ops>,
    /// Listeners' multishot accepts, and what they accepted.
    accepts: RefCell<Accepts>,
    /// The kernel takes multishot accepts (Linux 5.19, as the setup flags below).
    multishot_accept: bool,
    /// Streams' receives into the ring's buffers, and what they received.
    recvs: RefCell<Recvs>,
    /// Those buffers, registered at the first receive.
    bufs: RefCell<Option<BufRing>>,
    /// Transports (by token) whose receive or send completed, to report readable
    /// or writable at the end of the next `handle`.
    sink_reports: RefCell<Vec<(Token, SinkReport)>>,
    /// Streams receive into the ring's buffers (see [`Self::new_recv`]).
    ring_buffers: Cell<bool>,
    /// A stream's send (`submit_send`) is queued and not yet submitted (see
    /// [`Self::submit_queued`]).
    sends_queued: Cell<bool>,
    /// Set by `drop`: completions reaped then wake no task.
    tearing_down: Cell<bool>,
}

/// What completed for a transport, to report to it.
#[derive(Clone, Copy)]
enum SinkReport {
    /// Its receive, in this slot of `recvs`: it is readable.
    Received(RecvKey),
    /// Its send, this operation of `ops`: it is writable.
    Sent(OpKey),
}

/// Reports a failure to queue an entry while completions are being handled; the
/// handling goes on, so that no completion already reaped is lost. (Queueing fails
/// only when the queue is full and submitting it fails too.)
fn requeue(queued: io::Result<()>) {
    if let Err(e) = queued {
        log::error!("io_uring: could not queue a poll entry: {e}");
    }
}

/// Whether epoll would take `fd`: it exists, and is not a regular file or directory.
fn check_pollable(fd: RawFd) -> io::Result<()> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a `stat` into the live buffer; it is read only on success.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstat succeeded, so it filled the buffer.
    let kind = unsafe { st.assume_init() }.st_mode & libc::S_IFMT;
    if kind == libc::S_IFREG || kind == libc::S_IFDIR {
        return Err(io::Error::from_raw_os_error(libc::EPERM));
    }
    Ok(())
}

/// The error `build()` gives where the kernel refuses io_uring, saying why.
fn refused(e: io::Error) -> io::Error {
    let why = match e.raw_os_error() {
        Some(libc::ENOSYS) => "this kernel has no io_uring",
        Some(libc::EPERM) => {
            "io_uring is not permitted here (kernel.io_uring_disabled, or a seccomp filter)"
        }
        _ => "io_uring_setup failed",
    };
    io::Error::new(e.kind(), format!("cannot build a proactor loop: {why}: {e}"))
}

impl UringPoller {
    pub(crate) fn new(bell: RawFd, entries: u32) -> io::Result<Self> {
        if entries == 0 || entries > MAX_ENTRIES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot build a proactor loop: ring_entries must be 1 to {MAX_ENTRIES}, not {entries}"),
            ));
        }
        // Task work (what turns a socket's wakeup into a completion) runs at our next
        // kernel entry instead of interrupting the thread, and a flag in the ring says
        // when some waits: measured, the echo server's CPU per message halves (11.8
        // -> 6.1 µs). Kernels before 5.19 refuse the flags: build without them there
        // (and without multishot accepts, which came in the same release).
        let (ring, modern) = match IoUring::builder()
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .build(entries)
        {
            Ok(ring) => (ring, true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (IoUring::new(entries).map_err(refused)?, false),
            Err(e) => return Err(refused(e)),
        };
        let params = ring.params();
        if !params.is_feature_ext_arg() || !params.is_feature_nodrop() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "cannot build a proactor loop: the kernel's io_uring lacks \
                 IORING_FEAT_EXT_ARG or IORING_FEAT_NODROP (Linux 5.11 or later has both)",
            ));
        }
        let poller = UringPoller {
            ring: RefCell::new(ring),
            arms: RefCell::new(HashMap::new()),
            next_id: Cell::new(0),
            early: RefCell::new(Vec::new()),
            batch: RefCell::new(Vec::with_capacity(entries as usize * 2)),
            ops: RefCell::new(Ops::default()),
            accepts: RefCell::new(Accepts::default()),
            multishot_accept: modern,
            recvs: RefCell::new(Recvs::default()),
            bufs: RefCell::new(None),
            sink_reports: RefCell::new(Vec::new()),
            // Provided-buffer rings came in 5.19, as the setup flags above.
            ring_buffers: Cell::new(modern),
            sends_queued: Cell::new(false),
            tearing_down: Cell::new(false),
        };
        poller.arm(BELL, bell, libc::POLLIN as u32)?;
        Ok(poller)
    }

    fn token(token: Token) -> u32 {
        u32::try_from(token.0)
            .ok()
            .filter(|&t| t != BELL)
            .expect("fewer than 4G registrations on a loop")
    }

    fn mask(interest: Interest) -> u32 {
        let mut mask = 0;
        if interest.is_readable() {
            mask |= READ_MASK;
        }
        if interest.is_writable() {
            mask |= WRITE_MASK;
        }
        mask
    }

    /// Queues an entry. A full submission queue is submitted first; if the kernel
    /// refuses that because the completion queue is full too (`EBUSY`: it holds more
    /// in its overflow list), the completions are reaped to make room, and again.
    fn push(&self, entry: squeue::Entry) -> io::Result<()> {
        loop {
            {
                let mut ring = self.ring.borrow_mut();
                // SAFETY: a poll, removal, cancel or accept entry refers to no memory
                // of ours (an fd and numbers); an operation's entry refers only into
                // the buffer (and a message operation's header, iovec and address)
                // that the ops table owns until its completion (the contracts of
                // `start_op` and `start_msg_op`); a receive into the ring's buffers
                // names only its group, whose memory `BufRing` keeps until no
                // receive is in the kernel (the teardown in `drop`). So everything
                // an entry points to outlives the kernel's use of it.
                if unsafe { ring.submission().push(&entry) }.is_ok() {
                    return Ok(());
                }
                match ring.submit() {
                    Ok(_) => continue,
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EINTR)) => {}
                    Err(e) => return Err(e),
                }
            }
            self.reap_early(CANCEL);
        }
    }

    /// Starts a multishot poll of `fd` for `mask` under `token`, replacing none.
    fn arm(&self, token: u32, fd: RawFd, mask: u32) -> io::Result<()> {
        // 27 bits: with the token below them they fill bits 0-58 of `user_data`,
        // clear of the five kind bits above (REMOVAL, OP, CANCEL, ACCEPT, RECV).
        let id = self.next_id.get().wrapping_add(1) & ARM_ID_MASK;
        self.next_id.set(id);
        let arm = Arm { fd, mask, id };
        let entry = opcode::PollAdd::new(types::Fd(fd), mask)
            .multi(true)
            .build()
            .user_data(arm.user_data(token));
        self.push(entry)?;
        self.arms.borrow_mut().insert(token, arm);
        Ok(())
    }

    /// Ends `token`'s poll, if it has one; the `user_data` of its removal.
    fn disarm(&self, token: u32) -> io::Result<Option<u64>> {
        let Some(old) = self.arms.borrow_mut().remove(&token) else {
            return Ok(None);
        };
        let target = old.user_data(token);
        self.push_removal(target)?;
        Ok(Some(target | REMOVAL))
    }

    fn push_removal(&self, target: u64) -> io::Result<()> {
        self.push(
            opcode::PollRemove::new(target)
                .build()
                .user_data(target | REMOVAL),
        )
    }

    /// Starts watching `fd`. The poll itself is queued for the next submit, so the
    /// fd is checked here, where `epoll_ctl` would check it: a bad fd is `EBADF`, and
    /// a regular file or a directory (which any poll calls always ready) is `EPERM`,
    /// as epoll has it. Sockets, pipes and pidfds by type (`known_pollable`) skip the
    /// check: it is a system call per connection.
    pub(crate) fn add(&self, fd: RawFd, token: Token, interest: Interest, known_pollable: bool) -> io::Result<()> {
        if !known_pollable {
            check_pollable(fd)?;
        }
        self.arm(Self::token(token), fd, Self::mask(interest))
    }

    /// Replaces the poll: the new one reports the fd at once if it is ready now
    /// (what makes `add_reader` level-triggered, as `epoll_ctl(MOD)` does).
    pub(crate) fn modify(&self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        let token = Self::token(token);
        self.disarm(token)?;
        self.arm(token, fd, Self::mask(interest))
    }

    /// Ends the fd's poll now, before its owner closes the fd: while a poll is armed
    /// the ring holds the file, and a socket it holds is not closed (its peer would
    /// not see the end). The kernel answers a removal that meets the poll firing
    /// with `EALREADY`; it is tried again then, after the firing is done. The
    /// completions reaped meanwhile are kept for the next `wait` (`reap_early`).
    pub(crate) fn delete(&self, token: Token) {
        let Ok(Some(removal)) = self.disarm(Self::token(token)) else {
            return;
        };
        for _ in 0..REMOVAL_TRIES {
            if self.ring.borrow().submit_and_wait(1).is_err() {
                return;
            }
            match self.reap_early(removal) {
                Some(r) if r == -libc::EALREADY && self.push_removal(removal & !REMOVAL).is_ok() => {}
                Some(_) => return,
                // Not answered yet: wait again.
                None => {}
            }
        }
    }

    /// Submits what is queued if a stream's send is among it, without waiting:
    /// for a loop that stops running (or a send started while it does not run), so
    /// that a send starts now, not when the loop next runs. What the socket takes
    /// at once goes out; the rest of a large send waits for the loop's next entry
    /// into the kernel, as the rest of a large write waits on epoll. Everything
    /// queued goes with it, a level-triggered reader's poll too, which then reports
    /// what is true now rather than when the loop runs again: so only when a send
    /// is queued.
    pub(crate) fn submit_queued(&self) {
        if !self.sends_queued.replace(false) {
            return;
        }
        if let Err(e) = self.ring.borrow().submitter().submit() {
            log::debug!("io_uring: submitting as the loop stops failed ({e}): the next run submits");
        }
    }

    /// Whether a stream's send is queued and not submitted yet.
    pub(crate) fn sends_queued(&self) -> bool {
        self.sends_queued.get()
    }

    /// A send was queued: [`submit_queued`](Self::submit_queued) submits.
    pub(crate) fn note_send_queued(&self) {
        self.sends_queued.set(true);
    }

    /// Submits what is queued and files the completions there are, without waiting
    /// (a closing loop's transports settling their sends).
    pub(crate) fn reap_completions(&self) {
        self.sends_queued.set(false);
        if let Err(e) = self.ring.borrow().submitter().submit() {
            log::debug!("io_uring: submitting to read completions failed ({e})");
        }
        self.reap_early(CANCEL);
    }

    /// Submits what is queued and waits for completions (not at all unless `block`;
    /// until `deadline` if there is one), handing each fd's readiness to `f`.
    pub(crate) fn wait(
        &self,
        block: bool,
        deadline: Option<Instant>,
        f: &mut dyn FnMut(Token, Readiness),
    ) -> io::Result<()> {
        // Completions `delete` reaped are events already here: no waiting for more.
        let block = block && self.early.borrow().is_empty() && self.sink_reports.borrow().is_empty();
        self.sends_queued.set(false);
        let idle = {
            let mut ring = self.ring.borrow_mut();
            let sq = ring.submission();
            sq.is_empty() && !sq.taskrun() && !sq.cq_overflow()
        };
        let submitted = {
            let ring = self.ring.borrow();
            let submitter = ring.submitter();
            match (block, deadline) {
                // Nothing to submit, no task work pending, no overflow: every
                // completion there is is in the ring already; no system call.
                (false, _) if idle => Ok(0),
                (false, _) => submitter.submit(),
                (true, None) => submitter.submit_and_wait(1),
                (true, Some(d)) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        submitter.submit()
                    } else {
                        let ts = types::Timespec::from(left);
                        let args = types::SubmitArgs::new().timespec(&ts);
                        submitter.submit_with_args(1, &args)
                    }
                }
            }
        };
        match submitted {
            Ok(_) => {}
            // The deadline passed, a signal came, or completions wait to be read
            // (EBUSY: read them now).
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => {}
            Err(e) => return Err(e),
        }
        // Copied out of the ring first (the handling below queues entries into it),
        // into a buffer kept from one iteration to the next: no allocation per wait.
        let mut completed = std::mem::take(&mut *self.batch.borrow_mut());
        completed.append(&mut self.early.borrow_mut());
        completed.extend(
            self.ring
                .borrow_mut()
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        self.handle(&completed, f);
        completed.clear();
        *self.batch.borrow_mut() = completed;
        Ok(())
    }

    /// Turns completions into readiness for `f`, re-arming the polls the kernel
    /// ended and retrying the removals it put off.
    fn handle(&self, completed: &[(u64, i32, u32)], f: &mut dyn FnMut(Token, Readiness)) {
        for &(user_data, result, flags) in completed {
            if user_data & OP != 0 {
                self.op_completed(user_data, result, true);
                continue;
            }
            if user_data == CANCEL {
                continue;
            }
            if user_data & ACCEPT != 0 {
                self.accepted(user_data, result, flags, true);
                continue;
            }
            if user_data & RECV != 0 {
                self.received(user_data, result, flags, true);
                continue;
            }
            if user_data & REMOVAL != 0 {
                if result == -libc::EALREADY {
                    // The poll was firing when the removal came: remove it again.
                    requeue(self.push_removal(user_data & !REMOVAL));
                }
                continue;
            }
            let token = user_data as u32;
            let id = (user_data >> 32) as u32;
            let (fd, mask) = match self.arms.borrow().get(&token) {
                Some(arm) if arm.id == id => (arm.fd, arm.mask),
                // An arm replaced or removed since: stale.
                _ => continue,
            };
            if result < 0 {
                if result == -libc::ECANCELED {
                    continue;
                }
                // The poll failed (the fd was closed under it, say): whoever waits
                // on it tries, and meets the error.
                self.arms.borrow_mut().remove(&token);
                if token != BELL {
                    f(Token(token as usize), Readiness::ERROR);
                }
                continue;
            }
            if !cqueue::more(flags) {
                // The kernel ended the multishot poll (it does on overflow): again.
                requeue(self.arm(token, fd, mask));
            }
            if token == BELL {
                continue;
            }
            f(Token(token as usize), Readiness::from_poll_mask(result as u32));
        }
        self.report_to_sinks(f);
    }

    /// Tells the transports whose receive or send completed (here or in a
    /// `reap_early`) that they are readable or writable.
    fn report_to_sinks(&self, f: &mut dyn FnMut(Token, Readiness)) {
        if self.sink_reports.borrow().is_empty() {
            return;
        }
        let sinks = std::mem::take(&mut *self.sink_reports.borrow_mut());
        for &(token, report) in &sinks {
            // Not once its slot is gone: the token may be another source's by now.
            let (live, readable) = match report {
                SinkReport::Received(key) => (self.recvs.borrow().reports_to(key, token), true),
                SinkReport::Sent(key) => (self.ops.borrow().reports_to(key, token), false),
            };
            if live {
                f(token, Readiness { readable, writable: !readable, read_closed: false });
            }
        }
        let mut kept = self.sink_reports.borrow_mut();
        if kept.is_empty() {
            *kept = sinks;
            kept.clear();
        }
    }
}

/// The key in [`Ops`] of an operation's `user_data`.
fn op_key(user_data: u64) -> OpKey {
    (user_data & !OP) as OpKey
}

/// The operations: reads and writes the kernel does into buffers we own.
impl UringPoller {
    /// Files operation `user_data`'s completion; wakes its tasks if `wake`, or
    /// reports it to its transport.
    fn op_completed(&self, user_data: u64, result: i32, wake: bool) {
        let key = op_key(user_data);
        let (wakers, sink) = self.ops.borrow_mut().complete(key, result);
        if let Some(sink) = sink {
            self.sink_reports.borrow_mut().push((sink, SinkReport::Sent(key)));
        }
        if wake {
            wakers.wake();
        }
    }

    /// The result and buffer of operation `key`, if it completed.
    pub(crate) fn take_done_op(&self, key: OpKey) -> Option<(i32, Vec<u8>)> {
        self.ops.borrow_mut().take_done(key)
    }

    /// Queues `entry` (a read or a write) for the next submit, its buffer `buf` kept
    /// in the ops table until its completion arrives; the key to poll it by. On
    /// failure the buffer comes back. With a `sink`, the completion is reported to
    /// that transport (as readiness for writing; it collects the result with
    /// [`take_done_op`](Self::take_done_op)); without one, the tasks polling the
    /// key are woken.
    ///
    /// # Safety
    /// Every pointer in `entry` points into `buf`'s heap block (within its capacity),
    /// and nothing else: the kernel may use that memory until the completion, and the
    /// table keeps `buf` alive, unmoved, until then.
    pub(crate) unsafe fn start_op(
        &self,
        entry: squeue::Entry,
        buf: Vec<u8>,
        sink: Option<Token>,
    ) -> Result<OpKey, (io::Error, Vec<u8>)> {
        let key = self.ops.borrow_mut().insert(buf, sink);
        match self.push(entry.user_data(OP | key as u64)) {
            Ok(()) => Ok(key),
            Err(e) => Err((e, self.ops.borrow_mut().remove_unsubmitted(key))),
        }
    }

    /// [`start_op`](Self::start_op) for a `RECVMSG` or `SENDMSG`, whose header,
    /// iovec and address `msg` the table keeps as well.
    ///
    /// # Safety
    /// Every pointer in `entry` points into `msg` (the header), and every pointer in
    /// the header into `msg` (the iovec, the address) or `buf`'s heap block (within
    /// its capacity): the table keeps both alive, unmoved, until the completion.
    pub(crate) unsafe fn start_msg_op(
        &self,
        entry: squeue::Entry,
        buf: Vec<u8>,
        msg: MsgBox,
    ) -> Result<OpKey, (io::Error, Vec<u8>, MsgBox)> {
        let key = self.ops.borrow_mut().insert_msg(buf, msg);
        match self.push(entry.user_data(OP | key as u64)) {
            Ok(()) => Ok(key),
            Err(e) => {
                let (buf, msg) = self.ops.borrow_mut().remove_unsubmitted_msg(key);
                Err((e, buf, msg))
            }
        }
    }

    /// A message operation's result, buffer and parts, once it completed.
    pub(crate) fn poll_msg_op(
        &self,
        key: OpKey,
        cx: &mut Context<'_>,
    ) -> Poll<(i32, Vec<u8>, Option<MsgBox>)> {
        self.ops.borrow_mut().poll_msg(key, cx)
    }

    /// The operation's result (bytes, or a negative errno) and its buffer, once it
    /// completed; else `cx` is woken when it does.
    pub(crate) fn poll_op(&self, key: OpKey, cx: &mut Context<'_>) -> Poll<(i32, Vec<u8>)> {
        self.ops.borrow_mut().poll(key, cx)
    }

    /// The bytes of buffer lent to the kernel by operations in flight.
    #[cfg(test)]
    pub(crate) fn lent(&self) -> usize {
        self.ops.borrow().lent()
    }

    /// The loop is closing: every task waiting for an operation is woken, to find
    /// its stream closed.
    pub(crate) fn wake_all_ops(&self) {
        let wakers = self.ops.borrow_mut().take_wakers();
        wakers.into_iter().for_each(Wakers::wake);
        let waiters = self.accepts.borrow_mut().take_wakers();
        waiters.into_iter().for_each(Wakers::wake);
        let waiters = self.recvs.borrow_mut().take_wakers();
        waiters.into_iter().for_each(Wakers::wake);
    }

    /// Nobody will collect operation `key`: cancel it, and wait for the kernel to
    /// answer, so that the fd it holds is let go (its socket closes when its owner
    /// closes it, not at some later turn of the loop). Completions of other entries
    /// reaped meanwhile are handled as `reap_early` says. The buffer is freed when
    /// the completion arrives: here, or later if the kernel is slow to answer.
    pub(crate) fn cancel_op(&self, key: OpKey) {
        // Dropped, not woken: the caller was the one waiting for it.
        drop(self.orphan_op(key));
    }

    /// [`cancel_op`](Self::cancel_op) for an operation that another task waits for
    /// (a stream writer's flusher, when the writer is aborted): that task is woken,
    /// to find the operation gone.
    pub(crate) fn cancel_op_and_wake(&self, key: OpKey) {
        self.orphan_op(key).wake();
    }

    /// Submits what is queued and waits for operation `key` to complete, for at
    /// most `limit`; its result and buffer, or `None` if it did not complete in
    /// that time (it stays in the table, to poll later).
    pub(crate) fn wait_op(&self, key: OpKey, limit: Duration) -> Option<(i32, Vec<u8>)> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(done) = self.take_done_op(key) {
                return Some(done);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.wait_briefly(left.min(CANCEL_WAIT)).is_err() {
                return self.take_done_op(key);
            }
            self.reap_early(CANCEL);
        }
    }

    /// Whether operation `key` completed (its completion filed, not collected).
    pub(crate) fn op_done(&self, key: OpKey) -> bool {
        self.ops.borrow().is_done(key)
    }

    /// The length of operation `key`'s buffer.
    pub(crate) fn op_len(&self, key: OpKey) -> usize {
        self.ops.borrow().buf_len(key)
    }

    /// Cancels operation `key` and waits for the kernel's answer; the wakers of the
    /// tasks that polled it, to drop or wake with no borrow held.
    fn orphan_op(&self, key: OpKey) -> Wakers {
        let (in_kernel, wakers) = self.ops.borrow_mut().orphan(key);
        if in_kernel {
            // The orphan's completion, reaped now or by an earlier call, frees it.
            self.cancel_and_wait(OP | key as u64, || !self.ops.borrow().contains(key));
        }
        wakers
    }

    /// Cancels the entry whose `user_data` is `target` and waits, a bounded while,
    /// until `gone` says its last completion came. Bounded: a cancel that meets its
    /// entry mid-way (`EALREADY`) has it finish on its own, later; its completion is
    /// then handled by a later `wait`.
    fn cancel_and_wait(&self, target: u64, gone: impl Fn() -> bool) {
        if self.push(opcode::AsyncCancel::new(target).build().user_data(CANCEL)).is_err() {
            return;
        }
        for _ in 0..REMOVAL_TRIES {
            if self.wait_briefly(CANCEL_WAIT).is_err() {
                return;
            }
            self.reap_early(CANCEL);
            if gone() {
                return;
            }
        }
    }

    /// Cancels operation `key` and waits for its completion, to hand back what it
    /// did: for a stream leaving this loop, whose receive may have brought bytes
    /// already. `None` if the kernel did not answer within `DETACH_TRIES` waits (the
    /// operation is orphaned then, and freed when it completes).
    pub(crate) fn cancel_and_collect(&self, key: OpKey) -> Option<(i32, Vec<u8>)> {
        let target = OP | key as u64;
        if self.push(opcode::AsyncCancel::new(target).build().user_data(CANCEL)).is_ok() {
            for _ in 0..DETACH_TRIES {
                if let Some(done) = self.ops.borrow_mut().take_done(key) {
                    return Some(done);
                }
                if self.wait_briefly(CANCEL_WAIT).is_err() {
                    break;
                }
                self.reap_early(CANCEL);
            }
        }
        if let Some(done) = self.ops.borrow_mut().take_done(key) {
            return Some(done);
        }
        self.cancel_op(key);
        None
    }

    /// Submits what is queued and waits for a completion, for at most `limit`.
    fn wait_briefly(&self, limit: Duration) -> io::Result<()> {
        let ts = types::Timespec::from(limit);
        let args = types::SubmitArgs::new().timespec(&ts);
        match self.ring.borrow().submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Reaps the completions in the ring outside `wait`: the result of the entry
    /// whose `user_data` is `want`, if it came. Operations' completions are handled
    /// at once (their tasks woken, orphans freed: whoever waits for an orphan to go
    /// sees it gone); polls' wait in `early` for the next `wait`.
    fn reap_early(&self, want: u64) -> Option<i32> {
        let reaped: Vec<_> = self
            .ring
            .borrow_mut()
            .completion()
            .map(|c| (c.user_data(), c.result(), c.flags()))
            .collect();
        let mut answer = None;
        for c in reaped {
            if c.0 == want {
                answer = Some(c.1);
            } else if c.0 & OP != 0 {
                self.op_completed(c.0, c.1, !self.tearing_down.get());
            } else if c.0 & ACCEPT != 0 {
                self.accepted(c.0, c.1, c.2, !self.tearing_down.get());
            } else if c.0 & RECV != 0 {
                self.received(c.0, c.1, c.2, !self.tearing_down.get());
            } else {
                self.early.borrow_mut().push(c);
            }
        }
        answer
    }
}

/// Listeners' multishot accepts (see [`super::accepts`]).
impl UringPoller {
    /// Whether listeners accept through the ring (the kernel takes multishot accepts).
    pub(crate) fn accepts_by_ring(&self) -> bool {
        self.multishot_accept
    }

    /// Starts accepting on listener `fd`: in a new slot, or with `rearm` in the slot
    /// of the accept that ended.
    pub(crate) fn start_accept(&self, fd: RawFd, rearm: Option<AcceptKey>) -> io::Result<AcceptKey> {
        let key = match rearm {
            Some(key) => {
                self.accepts.borrow_mut().rearm(key);
                key
            }
            None => self.accepts.borrow_mut().insert(),
        };
        let entry = opcode::AcceptMulti::new(types::Fd(fd))
            .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
            .build()
            .user_data(ACCEPT | key as u64);
        if let Err(e) = self.push(entry) {
            if rearm.is_none() {
                self.accepts.borrow_mut().remove_unsubmitted(key);
            } else {
                // Ended, as before: the next poll submits again. Other tasks waiting on
                // the listener try too.
                let waiters = self.accepts.borrow_mut().unarm(key);
                waiters.wake();
            }
            return Err(e);
        }
        Ok(key)
    }

    /// The next connection accept `key` brought (an fd, or a negative errno), or that
    /// it ended; else `cx` is woken when one comes.
    pub(crate) fn poll_accept(&self, key: AcceptKey, cx: &mut Context<'_>) -> Poll<Next> {
        self.accepts.borrow_mut().poll(key, cx)
    }

    /// The listener goes away: its queued connections are closed, its accept is
    /// cancelled, and the kernel's answer awaited (briefly), so that the ring lets go
    /// of the listening socket when its owner closes it: the port is free again then.
    pub(crate) fn stop_accept(&self, key: AcceptKey) {
        let (live, waiters) = self.accepts.borrow_mut().orphan(key);
        drop(waiters);
        if live {
            self.cancel_and_wait(ACCEPT | key as u64, || !self.accepts.borrow().contains(key));
        }
    }

    fn push_accept_cancel(&self, key: AcceptKey) -> io::Result<()> {
        let target = ACCEPT | key as u64;
        self.push(opcode::AsyncCancel::new(target).build().user_data(CANCEL))
    }

    /// Files an accept's completion, cancelling the accept if its queue is full, and
    /// wakes the listener's tasks if `wake`.
    fn accepted(&self, user_data: u64, result: i32, flags: u32, wake: bool) {
        let key = (user_data & !ACCEPT) as AcceptKey;
        let done = self.accepts.borrow_mut().complete(key, result, cqueue::more(flags));
        if done.cancel {
            requeue(self.push_accept_cancel(key));
        }
        if wake {
            done.wake.wake();
        }
    }
}

/// Streams' receives into the ring's buffers (see [`super::recvs`]).
impl UringPoller {
    /// A slot for a stream's receives into the ring's buffers; `None` where this ring
    /// has none (a kernel before 5.19, or the buffer ring could not be registered:
    /// the stream then lends the kernel a buffer of its own, see
    /// [`super::completion`]).
    pub(crate) fn new_recv(&self) -> Option<RecvKey> {
        if !self.ring_buffers.get() {
            return None;
        }
        if self.bufs.borrow().is_none() {
            match BufRing::register(&self.ring.borrow().submitter()) {
                Ok(bufs) => *self.bufs.borrow_mut() = Some(bufs),
                Err(e) => {
                    log::debug!("io_uring: no provided-buffer ring ({e}): streams lend the kernel their own buffers");
                    self.ring_buffers.set(false);
                    return None;
                }
            }
        }
        Some(self.recvs.borrow_mut().insert())
    }

    /// Reports receive slot `key`'s completions as readiness of transport `sink`
    /// (see [`Recvs::set_sink`]).
    pub(crate) fn set_recv_sink(&self, key: RecvKey, sink: Token) {
        self.recvs.borrow_mut().set_sink(key, sink);
    }

    /// Whether stream `key` has no bytes queued and no receive in the kernel (see
    /// [`Recvs::is_idle`]).
    pub(crate) fn recv_is_idle(&self, key: RecvKey) -> bool {
        self.recvs.borrow().is_idle(key)
    }

    /// Whether streams receive into the ring's buffers (so far: the buffer ring may
    /// yet fail to register at the first).
    pub(crate) fn receives_into_ring_buffers(&self) -> bool {
        self.ring_buffers.get()
    }

    /// Submits stream `fd`'s next receive, in slot `key`.
    fn push_recv(&self, fd: RawFd, key: RecvKey) -> io::Result<()> {
        // No buffer: the kernel picks one from the group when bytes arrive.
        let entry = opcode::Recv::new(types::Fd(fd), std::ptr::null_mut(), buf_ring::BUFFER_SIZE as u32)
            .buf_group(buf_ring::GROUP)
            .build()
            .flags(squeue::Flags::BUFFER_SELECT)
            .user_data(RECV | key as u64);
        self.recvs.borrow_mut().set_live(key, true);
        let pushed = self.push(entry);
        if pushed.is_err() {
            self.recvs.borrow_mut().set_live(key, false);
        }
        pushed
    }

    /// Hands what stream `fd` received to `take` (see [`Recvs::poll`]): `Ok(n)` bytes
    /// taken, `Ok(0)` the end of the stream (or `want == 0`), or the stream's error;
    /// else `cx` is woken when something comes. Submits the receive it needs.
    pub(crate) fn poll_recv(
        &self,
        key: RecvKey,
        fd: RawFd,
        cx: &mut Context<'_>,
        want: usize,
        take: &mut dyn FnMut(&[u8]) -> usize,
    ) -> Poll<io::Result<usize>> {
        self.poll_recv_by(key, fd, Some(cx), want, take)
    }

    /// [`poll_recv`](Self::poll_recv) for a transport, which its sink's readiness
    /// tells when a receive completes: `None` while one is in the kernel.
    pub(crate) fn take_recv(
        &self,
        key: RecvKey,
        fd: RawFd,
        want: usize,
        take: &mut dyn FnMut(&[u8]) -> usize,
    ) -> Option<io::Result<usize>> {
        match self.poll_recv_by(key, fd, None, want, take) {
            Poll::Ready(r) => Some(r),
            Poll::Pending => None,
        }
    }

    fn poll_recv_by(
        &self,
        key: RecvKey,
        fd: RawFd,
        mut cx: Option<&mut Context<'_>>,
        want: usize,
        take: &mut dyn FnMut(&[u8]) -> usize,
    ) -> Poll<io::Result<usize>> {
        loop {
            let (next, read_ahead) = self.recvs.borrow_mut().poll(key, fd, cx.as_deref_mut(), want, &mut *take);
            match next {
                recvs::Next::Ready(r) => {
                    // A failure to submit is left for the next read to meet.
                    if read_ahead {
                        let _ = self.push_recv(fd, key);
                    }
                    return Poll::Ready(r);
                }
                recvs::Next::Submit => self.push_recv(fd, key)?,
                recvs::Next::Pending => return Poll::Pending,
            }
        }
    }

    /// The stream goes away: what it queued is dropped, its receive is cancelled and
    /// the kernel's answer awaited (briefly), so that the ring lets go of the socket
    /// when its owner closes it.
    pub(crate) fn stop_recv(&self, key: RecvKey) {
        let (live, waiters) = self.recvs.borrow_mut().orphan(key);
        drop(waiters);
        if live {
            self.cancel_and_wait(RECV | key as u64, || !self.recvs.borrow().contains(key));
        }
    }

    /// The stream leaves this loop: its receive is cancelled and its completion
    /// awaited, so that no receive of this ring takes the new owner's bytes. Returns
    /// the bytes received and never read (which the new owner will not see).
    pub(crate) fn detach_recv(&self, key: RecvKey) -> usize {
        let target = RECV | key as u64;
        if self.recvs.borrow().is_live(key)
            && self.push(opcode::AsyncCancel::new(target).build().user_data(CANCEL)).is_ok()
        {
            for _ in 0..DETACH_TRIES {
                if !self.recvs.borrow().is_live(key) || self.wait_briefly(CANCEL_WAIT).is_err() {
                    break;
                }
                self.reap_early(CANCEL);
            }
        }
        let unread = self.recvs.borrow().queued(key);
        self.stop_recv(key);
        unread
    }

    /// Files a receive's completion, and wakes the stream's readers if `wake`.
    fn received(&self, user_data: u64, result: i32, flags: u32, wake: bool) {
        let key = (user_data & !RECV) as RecvKey;
        let wakers = {
            let mut bufs = self.bufs.borrow_mut();
            let bufs = bufs.as_mut().expect("a receive's buffers are registered");
            self.recvs.borrow_mut().complete(key, result, flags, bufs)
        };
        let (wakers, sink) = wakers;
        if let Some(sink) = sink {
            self.sink_reports.borrow_mut().push((sink, SinkReport::Received(key)));
        }
        if wake {
            wakers.wake();
        }
    }

    /// Bytes received and not read, over all streams (for tests).
    #[cfg(test)]
    pub(crate) fn queued_by_recvs(&self) -> usize {
        self.recvs.borrow().queued_total()
    }

    /// Streams with a slot for receives into the ring's buffers (for tests).
    #[cfg(test)]
    pub(crate) fn receives(&self) -> usize {
        self.recvs.borrow().len()
    }

    /// Makes this ring's streams lend the kernel their own buffers (for the tests of
    /// that path, which older kernels take).
    #[cfg(test)]
    pub(crate) fn disable_ring_buffers(&self) {
        self.ring_buffers.set(false);
    }
}

impl Drop for UringPoller {
    /// The ring goes away with its loop: every operation still in the kernel is
    /// cancelled and its completion awaited before the buffers are freed. Whatever the
    /// kernel does not answer in time keeps its buffer, leaked (and logged): the
    /// kernel tears a closed ring down asynchronously, and may still use it.
    fn drop(&mut self) {
        self.cancel_everything();
        // The receive buffers go last: freed only once no receive is in the kernel
        // (which could still pick one), else leaked.
        if let Some(bufs) = self.bufs.borrow_mut().take() {
            if self.recvs.borrow().is_empty() {
                bufs.unregister(&self.ring.borrow().submitter());
            } else {
                bufs.leak();
                log::error!(
                    "io_uring teardown: receives did not answer their cancel; \
                     the receive buffers are leaked rather than freed under the kernel"
                );
            }
        }
    }
}

impl UringPoller {
    /// Cancels every operation, accept and receive still in the kernel and waits
    /// (a bounded while) for their answers.
    fn cancel_everything(&self) {
        // Accepts still going (a listener that outlived its loop) are orphaned: what
        // they queued is closed, and so is every connection whose completion comes
        // from here on (the kernel put each in our fd table already). Receives still
        // in the kernel drop what they bring.
        let accepts = self.accepts.borrow_mut().orphan_all();
        let recvs = self.recvs.borrow_mut().orphan_all();
        let idle = || self.ops.borrow().in_flight() == 0 && self.accepts.borrow().is_empty() && self.recvs.borrow().is_empty();
        if idle() {
            return;
        }
        // No task is woken from here on: their loop is going away.
        self.tearing_down.set(true);
        // One cancel per operation (a cancel-any needs Linux 5.19; this loop runs on
        // 5.11 and later).
        let keys = self.ops.borrow().in_flight_keys();
        let cancelled = keys
            .into_iter()
            .map(|key| OP | key as u64)
            .chain(accepts.into_iter().map(|key| ACCEPT | key as u64))
            .chain(recvs.into_iter().map(|key| RECV | key as u64))
            .try_for_each(|target| self.push(opcode::AsyncCancel::new(target).build().user_data(CANCEL)));
        if cancelled.is_ok() {
            for _ in 0..TEARDOWN_TRIES {
                if self.wait_briefly(TEARDOWN_WAIT).is_err() {
                    break;
                }
                // A waker still in a slot belongs to a task of this loop, which is
                // closed: it is dropped, not woken.
                self.reap_early(CANCEL);
                if idle() {
                    return;
                }
            }
        }
        let leaked = self.ops.borrow_mut().leak_in_flight();
        if leaked > 0 {
            log::error!(
                "io_uring teardown: {leaked} operations did not answer their cancel; \
                 their buffers are leaked rather than freed under the kernel"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_user_data_never_looks_like_another_kind_of_entry() {
        let arm = Arm {
            fd: 0,
            mask: 0,
            id: ARM_ID_MASK,
        };
        for token in [0, 1, u32::MAX - 1, BELL] {
            let user_data = arm.user_data(token);
            assert_eq!(user_data & (REMOVAL | OP | CANCEL | ACCEPT | RECV), 0, "token {token}");
            assert_ne!(user_data, CANCEL);
        }
    }
}
