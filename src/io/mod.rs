//! The loop's reactor: readiness (from epoll or io_uring) turned into task wakeups
//! and fd callbacks.

pub(crate) mod bell;
mod accepts;
mod completion;
pub(crate) mod datagrams;
mod epoll;
pub(crate) mod fd;
mod ops;
pub(crate) mod owned;
pub(crate) mod poller;
pub(crate) mod reactor;
pub(crate) mod registration;
mod timerfd;
pub(crate) mod uring;
