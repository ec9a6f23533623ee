//! The loop's reactor: readiness (from epoll or io_uring) turned into task wakeups
//! and fd callbacks.

pub(crate) mod bell;
mod accepts;
mod buf_ring;
mod completion;
pub(crate) mod datagrams;
mod epoll;
pub(crate) mod fd;
mod ops;
pub(crate) mod owned;
pub(crate) mod poller;
pub(crate) mod reactor;
pub(crate) mod recvs;
pub(crate) mod registration;
mod timerfd;
pub(crate) mod uring;
mod wakers;
mod write_behind;

pub(crate) use completion::submit_send;
pub(crate) use ops::OpKey;

/// The size of one of the ring's receive buffers (for tests of what is held).
#[cfg(test)]
pub(crate) use buf_ring::BUFFER_SIZE;

/// A proactor loop for a unit test, or `None` where the test cannot run one: no
/// io_uring here, or under valgrind (CI runs the unit tests under memcheck), which
/// cannot follow io_uring; it preloads its own libraries, which says it is there.
#[cfg(test)]
pub(crate) fn test_proactor() -> Option<crate::EventLoop> {
    if std::env::var("LD_PRELOAD").is_ok_and(|v| v.contains("vgpreload")) {
        return None;
    }
    crate::EventLoop::builder().proactor(true).build().ok()
}

/// Runs the test `body` on a proactor loop set as this thread's (see
/// [`test_proactor`]); does nothing where there is none.
#[cfg(test)]
pub(crate) fn on_test_proactor<F: std::future::Future>(body: impl FnOnce(crate::EventLoop) -> F) {
    let Some(lp) = test_proactor() else {
        return;
    };
    crate::set_event_loop(Some(lp.clone()));
    lp.run_until_complete(body(lp.clone())).unwrap();
    crate::set_event_loop(None);
}

/// Sleeps a millisecond at a time until `done`, for at most 20 s: a ring test's
/// wait for the kernel.
#[cfg(test)]
pub(crate) async fn until(done: impl Fn() -> bool) {
    for _ in 0..20_000 {
        if done() {
            return;
        }
        crate::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    panic!("the condition did not come true in 20 s");
}

/// `n` pseudo-random numbers from `seed` (xorshift): a ring test's rounds, a fixed
/// and varied sequence of sizes and points to stop at.
#[cfg(test)]
pub(crate) fn rounds(mut seed: u32, n: usize) -> impl Iterator<Item = u32> {
    std::iter::repeat_with(move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    })
    .take(n)
}

/// `len` bytes in a pattern that shows bytes reordered or changed.
#[cfg(test)]
pub(crate) fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// A peer on a thread that reads nothing until `go` (the sender) says so, then
/// reads to EOF and returns what it read (nothing if `go` is dropped instead).
#[cfg(test)]
pub(crate) type SlowPeer = (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<Vec<u8>>);

/// A [`SlowPeer`] listening at the address returned, for one connection.
#[cfg(test)]
pub(crate) fn slow_peer() -> (std::net::SocketAddr, SlowPeer) {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (go, wait) = std::sync::mpsc::channel();
    let peer = std::thread::spawn(move || {
        let (mut peer, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        if wait.recv().is_ok() {
            peer.read_to_end(&mut got).unwrap();
        }
        got
    });
    (addr, (go, peer))
}

/// The bytes of buffer that `lp`'s ring lends the kernel for operations in flight.
#[cfg(test)]
pub(crate) fn lent(lp: &crate::EventLoop) -> usize {
    lp.inner.reactor.ring().unwrap().lent()
}
