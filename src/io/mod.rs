//! The loop's reactor: mio readiness turned into task wakeups.

pub(crate) mod reactor;
