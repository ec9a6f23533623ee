//! The cooperative budget: how many operations a task may complete in one poll.
//!
//! A task whose sockets are always ready would otherwise never return `Pending`, and
//! timers, other tasks and the inbox would starve behind it. Each task poll starts
//! with [`BUDGET`] units; shardloop's own resources (socket operations, `Task` and
//! `Remote` joins, channel receives) spend one for each operation that completes,
//! and once the budget is spent they return `Pending` after waking the task, which
//! then waits its turn at the back of the ready queue. Outside a task (a callback, a
//! plain thread) nothing is counted.

use std::cell::Cell;
use std::task::{Context, Poll};

/// Operations per task poll (tokio's number).
pub(crate) const BUDGET: u32 = 128;
/// Outside a task poll: no limit.
const UNCONSTRAINED: u32 = u32::MAX;

thread_local! {
    static LEFT: Cell<u32> = const { Cell::new(UNCONSTRAINED) };
}

/// A fresh budget for one poll; the previous one comes back when it is dropped (a
/// task polled from inside another loop's task, say).
pub(crate) struct Budget {
    previous: u32,
}

impl Budget {
    pub(crate) fn enter() -> Budget {
        Budget {
            previous: LEFT.with(|l| l.replace(BUDGET)),
        }
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        let _ = LEFT.try_with(|l| l.set(self.previous));
    }
}

/// Runs one operation's poll `f` if budget is left: spends a unit when it completes;
/// when none is left, wakes the task and returns `Pending` without calling `f`.
#[inline]
pub(crate) fn poll_budgeted<R>(
    cx: &mut Context<'_>,
    f: impl FnOnce(&mut Context<'_>) -> Poll<R>,
) -> Poll<R> {
    let left = LEFT.try_with(Cell::get).unwrap_or(UNCONSTRAINED);
    if left == 0 {
        cx.waker().wake_by_ref();
        return Poll::Pending;
    }
    let polled = f(cx);
    if polled.is_ready() && left != UNCONSTRAINED {
        // Read again: `f` may have polled a nested task with its own budget, which
        // restored ours on the way out.
        let _ = LEFT.try_with(|l| l.set(l.get().saturating_sub(1)));
    }
    polled
}

/// Whether the current poll has budget left (for resources that test before work).
#[cfg(test)]
pub(crate) fn has_budget() -> bool {
    LEFT.try_with(Cell::get).unwrap_or(UNCONSTRAINED) > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spent_budget_says_pending_until_the_next_poll() {
        let waker = crate::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let _budget = Budget::enter();
        for _ in 0..BUDGET {
            assert!(poll_budgeted(&mut cx, |_| Poll::Ready(())).is_ready());
        }
        assert!(!has_budget());
        let mut called = false;
        let polled = poll_budgeted(&mut cx, |_| {
            called = true;
            Poll::Ready(())
        });
        assert!(polled.is_pending() && !called);
        drop(_budget);
        // Outside a task poll: unconstrained again.
        assert!(poll_budgeted(&mut cx, |_| Poll::Ready(())).is_ready());
    }

    #[test]
    fn pending_operations_cost_nothing() {
        let waker = crate::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let _budget = Budget::enter();
        for _ in 0..10 * BUDGET {
            assert!(poll_budgeted(&mut cx, |_| Poll::<()>::Pending).is_pending());
        }
        assert!(has_budget());
    }
}
