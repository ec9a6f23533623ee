//! How one proactor thread should wake another that is parked in `io_uring_enter`:
//! the doorbell the loop has (an eventfd, watched by a multishot `POLL_ADD` in the
//! parked thread's ring; the waker `write`s it), against `IORING_OP_MSG_RING`
//! (the waker's own ring posts a completion straight into the parked one's), which
//! issue 11 asked to measure.
//!
//! Two threads, pinned to two cores, each with its own ring, play ping-pong: each
//! wakes the other and parks until it is woken back, N round trips. Printed per
//! doorbell: round trips a second, CPU (user + system, both threads) per round trip,
//! and the system calls a hop makes:
//! - `eventfd`: `write` to the other's eventfd, then `io_uring_enter` to park (2);
//! - `msg_ring`: the `MSG_RING` submitted and the park in one `io_uring_enter` (1),
//!   which is what a loop that sends it with its next submit would do;
//! - `msg_ring, own enter`: the `MSG_RING` submitted at once, then the park (2): the
//!   kernel paths alone, with the system calls of the eventfd.
//!
//! `cargo bench --bench doorbell` (DOORBELL_N round trips, default 200000; ROUNDS
//! rounds, alternating the doorbells, medians; default 5).

use std::env;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, types, IoUring};

/// The `user_data` of the eventfd's poll and of a `MSG_RING`'s completion.
const WOKEN: u64 = 1;

#[derive(Clone, Copy, PartialEq)]
enum Bell {
    EventFd,
    MsgRing,
    MsgRingOwnEnter,
}

impl Bell {
    fn name(self) -> &'static str {
        match self {
            Bell::EventFd => "eventfd + multishot POLL_ADD (the loop's doorbell)",
            Bell::MsgRing => "MSG_RING, sent with the park (one io_uring_enter)",
            Bell::MsgRingOwnEnter => "MSG_RING, its own io_uring_enter",
        }
    }
}

/// One side: its ring and its eventfd.
struct Side {
    ring: IoUring,
    eventfd: OwnedFd,
}

impl Side {
    fn new() -> Side {
        let ring = IoUring::new(8).expect("io_uring_setup");
        // SAFETY: a plain syscall with constant flags; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        assert!(fd >= 0, "eventfd: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` was just created and is owned by nobody else.
        let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut side = Side { ring, eventfd };
        let poll = opcode::PollAdd::new(types::Fd(side.eventfd.as_raw_fd()), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(WOKEN);
        side.push(poll);
        side.ring.submit().expect("submit the poll");
        side
    }

    fn push(&mut self, entry: squeue::Entry) {
        // SAFETY: the entry names no memory of ours (a poll, or a message to a ring
        // whose fd outlives the run: both sides wait at a barrier before closing).
        unsafe {
            self.ring
                .submission()
                .push(&entry)
                .expect("room in the queue")
        };
    }

    /// Wakes the side whose eventfd and ring are `peer`.
    fn wake(&mut self, bell: Bell, peer: (RawFd, RawFd)) {
        match bell {
            Bell::EventFd => {
                let one = 1u64.to_ne_bytes();
                // SAFETY: writes 8 bytes from a live 8-byte buffer.
                let n = unsafe { libc::write(peer.0, one.as_ptr().cast(), 8) };
                assert_eq!(n, 8, "eventfd write: {}", std::io::Error::last_os_error());
            }
            Bell::MsgRing | Bell::MsgRingOwnEnter => {
                let msg = opcode::MsgRingData::new(types::Fd(peer.1), 0, WOKEN, None)
                    .build()
                    .flags(squeue::Flags::SKIP_SUCCESS);
                self.push(msg);
                if bell == Bell::MsgRingOwnEnter {
                    self.ring.submit().expect("submit the message");
                }
            }
        }
    }

    /// Parks until woken (submitting what is queued in the same call).
    fn park(&mut self) {
        loop {
            self.ring.submit_and_wait(1).expect("io_uring_enter");
            let mut woken = false;
            for cqe in self.ring.completion() {
                assert!(cqe.result() >= 0, "a completion failed: {}", cqe.result());
                woken |= cqe.user_data() == WOKEN;
            }
            if woken {
                return;
            }
        }
    }
}

fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// N round trips with `bell`: (wall time, CPU time of both threads).
fn ping_pong(bell: Bell, n: usize) -> (Duration, Duration) {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let (fds_tx, fds_rx) = mpsc::channel();
    let peers: Vec<_> = (0..2).map(|_| mpsc::channel::<(RawFd, RawFd)>()).collect();
    let done = Arc::new(Barrier::new(3));
    let mut senders = Vec::new();
    let mut threads = Vec::new();
    for (me, (tx, rx)) in peers.into_iter().enumerate() {
        senders.push(tx);
        let (fds_tx, done) = (fds_tx.clone(), done.clone());
        let core = cores.get(me).copied();
        threads.push(thread::spawn(move || {
            if let Some(core) = core {
                core_affinity::set_for_current(core);
            }
            let mut side = Side::new();
            fds_tx
                .send((me, side.eventfd.as_raw_fd(), side.ring.as_raw_fd()))
                .unwrap();
            let peer = rx.recv().unwrap();
            for _ in 0..n {
                if me == 0 {
                    side.wake(bell, peer);
                    side.park();
                } else {
                    side.park();
                    side.wake(bell, peer);
                }
            }
            // Flush a last message still queued, then keep both rings open until
            // both are done.
            side.ring.submit().unwrap();
            done.wait();
        }));
    }
    let mut fds = [(0, 0); 2];
    for _ in 0..2 {
        let (me, eventfd, ring) = fds_rx.recv().unwrap();
        fds[me] = (eventfd, ring);
    }
    let (cpu, start) = (cpu_time(), Instant::now());
    senders[0].send(fds[1]).unwrap();
    senders[1].send(fds[0]).unwrap();
    done.wait();
    let (wall, cpu) = (start.elapsed(), cpu_time() - cpu);
    for t in threads {
        t.join().unwrap();
    }
    (wall, cpu)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let n: usize = env::var("DOORBELL_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let rounds: usize = env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    if IoUring::new(2).is_err() {
        println!("skipped: this kernel refuses io_uring_setup");
        return;
    }
    let bells = [Bell::EventFd, Bell::MsgRing, Bell::MsgRingOwnEnter];
    let mut results: Vec<(Vec<Duration>, Vec<Duration>)> =
        bells.iter().map(|_| Default::default()).collect();
    for round in 0..rounds {
        // Alternate the order, so that no doorbell always runs first.
        let order: Vec<usize> = match round % 2 {
            0 => (0..bells.len()).collect(),
            _ => (0..bells.len()).rev().collect(),
        };
        for i in order {
            let (wall, cpu) = ping_pong(bells[i], n);
            results[i].0.push(wall);
            results[i].1.push(cpu);
        }
    }
    println!("| doorbell (N = {n} round trips, median of {rounds}) | round trips/s | CPU µs per round trip | vs eventfd |");
    println!("|---|---:|---:|---:|");
    let base = median(results[0].0.clone());
    for (bell, (walls, cpus)) in bells.iter().zip(results) {
        let (wall, cpu) = (median(walls), median(cpus));
        println!(
            "| {} | {:.0} | {:.2} | {:.2}x |",
            bell.name(),
            n as f64 / wall.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / n as f64,
            base.as_secs_f64() / wall.as_secs_f64(),
        );
    }
}
