//! Debug mode: slow callbacks are logged with their name and duration, and
//! scheduling calls from a foreign thread are refused.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use shardloop::{Error, EventLoop};

/// Records every log line so that tests can look for the slow-callback warning.
struct Recorder(Mutex<Vec<(log::Level, String)>>);

impl log::Log for Recorder {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        self.0
            .lock()
            .unwrap()
            .push((record.level(), record.args().to_string()));
    }
    fn flush(&self) {}
}

fn recorder() -> &'static Recorder {
    static REC: OnceLock<&'static Recorder> = OnceLock::new();
    REC.get_or_init(|| {
        let rec: &'static Recorder = Box::leak(Box::new(Recorder(Mutex::new(Vec::new()))));
        log::set_logger(rec).expect("no other logger in this test binary");
        log::set_max_level(log::LevelFilter::Trace);
        rec
    })
}

fn logged_by(loop_name: &str) -> Vec<(log::Level, String)> {
    recorder()
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, m)| m.contains(loop_name))
        .cloned()
        .collect()
}

fn slow_one() {
    std::thread::sleep(Duration::from_millis(20));
}

#[test]
fn debug_mode_logs_slow_callbacks_with_name_and_duration() {
    recorder();
    let lp = EventLoop::builder()
        .name("debug-slow")
        .debug(true)
        .slow_callback_duration(Duration::from_millis(5))
        .build()
        .unwrap();
    lp.call_soon(slow_one).unwrap();
    lp.call_soon(|| ()).unwrap();
    lp.stop();
    lp.run_forever().unwrap();
    let lines = logged_by("debug-slow");
    assert_eq!(
        lines.len(),
        1,
        "exactly the slow callback is reported: {lines:?}"
    );
    let (level, msg) = &lines[0];
    assert_eq!(*level, log::Level::Warn);
    assert!(msg.contains("slow_one"), "names the callback: {msg}");
    assert!(
        msg.contains("took") && msg.contains("seconds"),
        "says how long: {msg}"
    );
    assert!(lp.stats().longest_callback >= Duration::from_millis(20));
}

/// A slow callback sent from another thread is named too (it waits in the loop's
/// mail queue, not behind a handle).
#[test]
fn debug_mode_names_a_slow_threadsafe_callback() {
    recorder();
    let lp = EventLoop::builder()
        .name("threadsafe-slow")
        .debug(true)
        .slow_callback_duration(Duration::from_millis(5))
        .build()
        .unwrap();
    let handle = lp.handle();
    std::thread::spawn(move || {
        handle.call_soon_threadsafe(slow_one).unwrap();
        handle.stop();
    })
    .join()
    .unwrap();
    lp.run_forever().unwrap();
    let lines = logged_by("threadsafe-slow");
    assert_eq!(lines.len(), 1, "the slow callback is reported: {lines:?}");
    assert!(lines[0].1.contains("slow_one"), "names it: {}", lines[0].1);
}

#[test]
fn without_debug_mode_slow_callbacks_are_not_logged() {
    recorder();
    let lp = EventLoop::builder()
        .name("quiet-slow")
        .debug(false)
        .slow_callback_duration(Duration::from_millis(5))
        .build()
        .unwrap();
    lp.call_soon(slow_one).unwrap();
    lp.stop();
    lp.run_forever().unwrap();
    assert!(logged_by("quiet-slow").is_empty());
}

#[test]
fn panics_are_logged_by_the_default_handler() {
    recorder();
    let lp = EventLoop::builder().name("panicky").build().unwrap();
    lp.call_soon(|| panic!("kaboom")).unwrap();
    lp.stop();
    lp.run_forever().unwrap();
    let lines = logged_by("panicky");
    assert!(
        lines.iter().any(|(l, m)| *l == log::Level::Error
            && m.contains("exception in callback")
            && m.contains("kaboom")),
        "{lines:?}"
    );
}

/// The loop types are `!Send`; this smuggles one across threads the way an unsafe
/// FFI embedding might, which is exactly what debug mode's check exists for.
struct Smuggled(EventLoop);
// SAFETY: the smuggled loop is only used for calls that debug mode refuses before
// touching any loop state (the thread check comes first), and it is moved back and
// dropped on its own thread.
unsafe impl Send for Smuggled {}

#[test]
fn debug_mode_refuses_scheduling_from_a_foreign_thread() {
    let lp = EventLoop::builder().debug(true).build().unwrap();
    let smuggled = Smuggled(lp.clone());
    let back = std::thread::spawn(move || {
        let s = smuggled;
        let results = (
            matches!(s.0.call_soon(|| ()), Err(Error::WrongThread)),
            matches!(
                s.0.call_later(Duration::ZERO, || ()),
                Err(Error::WrongThread)
            ),
            matches!(s.0.call_at(s.0.time(), || ()), Err(Error::WrongThread)),
        );
        (results, s)
    })
    .join()
    .unwrap();
    assert_eq!(back.0, (true, true, true));
    drop(back.1);
    // On its own thread the same loop schedules fine.
    assert!(lp.call_soon(|| ()).is_ok());
}
