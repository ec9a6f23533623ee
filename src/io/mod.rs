//! The loop's reactor: mio readiness turned into task wakeups and fd callbacks.

pub(crate) mod fd;
pub(crate) mod reactor;
pub(crate) mod registration;
mod timerfd;
