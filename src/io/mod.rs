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
