//! Spinning before parking: a loop that ran out of work keeps looking for more for a
//! short window (`LoopBuilder::spin_before_park`), yielding its core between looks,
//! so that work arriving within the window costs no sleep, eventfd write or wakeup.

use std::time::Instant;

use super::LoopInner;

impl LoopInner {
    /// Spins up to `spin_before_park` (never past `deadline`) until there is work:
    /// mail from another thread, or I/O readiness that made something ready to run.
    /// Returns whether it found any.
    pub(super) fn spin_for_work(&self, deadline: Option<Instant>) -> bool {
        if self.spin_before_park.is_zero() {
            return false;
        }
        let window_end = Instant::now().checked_add(self.spin_before_park);
        let until = match (window_end, deadline) {
            (Some(w), Some(d)) => Some(w.min(d)),
            (w, d) => w.or(d),
        };
        loop {
            for _ in 0..64 {
                if self.shared.doorbell.has_news() {
                    return true;
                }
                std::hint::spin_loop();
            }
            // Checked before yielding: a yield on a busy core can last a time slice.
            if until.is_some_and(|u| Instant::now() >= u) {
                return false;
            }
            // A thread that shares this core (a client, another shard) runs now
            // rather than when the window ends: on a busy machine a pure spin
            // delays the very work it waits for.
            std::thread::yield_now();
            let events = self.reactor.poll_now(&self.ready);
            // I/O was just polled: the busy-path countdown starts over.
            self.io_countdown.set(self.event_interval);
            self.stats.add_io_events(events);
            if !self.ready.borrow().is_empty() {
                return true;
            }
        }
    }
}
