//! The loop's reactor: readiness (from epoll or io_uring) turned into task wakeups
//! and fd callbacks.

pub(crate) mod bell;
mod epoll;
pub(crate) mod fd;
pub(crate) mod poller;
pub(crate) mod reactor;
pub(crate) mod registration;
mod timerfd;
mod uring;
