//! Running a test out of file descriptors: lowering `RLIMIT_NOFILE` would starve the
//! whole test process, so such a test runs itself again in a child process (this
//! binary, that test only, with a variable set) and the parent checks what the child
//! printed. The child counts the "accept failed" warnings a server logs, to tell
//! that it ran out.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Set in the child process.
const CHILD: &str = "SHARDLOOP_TEST_EMFILE_CHILD";
/// What the child prints once its scenario passed.
const DONE: &str = "emfile child: every client was served";

/// Whether this process is the child.
pub fn in_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

/// Runs the test `name` again in a child process and checks that it passed and
/// got to the end of its scenario (`child_done`).
pub fn run_in_child(name: &str) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(DONE),
        "the child failed or did not run the scenario\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
}

/// Said by the child at the end of its scenario.
pub fn child_done() {
    println!("{DONE}");
}

/// Counts the warnings a failing accept logs.
struct WarnCounter;

static WARNINGS: AtomicUsize = AtomicUsize::new(0);

impl log::Log for WarnCounter {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record) {
        if r.level() == log::Level::Warn && r.args().to_string().contains("accept failed") {
            WARNINGS.fetch_add(1, Ordering::SeqCst);
        }
        eprintln!("[{}] {}", r.level(), r.args());
    }
    fn flush(&self) {}
}

/// Installs the counting logger (once per process: the child's).
pub fn count_accept_warnings() {
    log::set_logger(&WarnCounter).unwrap();
    log::set_max_level(log::LevelFilter::Warn);
}

/// How many "accept failed" warnings were logged.
pub fn accept_warnings() -> usize {
    WARNINGS.load(Ordering::SeqCst)
}

/// `n` clients of `addr`, each of which has sent its number as one byte (the
/// kernel completes their handshakes into the listen backlog).
pub fn clients_that_sent_a_byte(addr: SocketAddr, n: usize, timeout: Duration) -> Vec<TcpStream> {
    use std::io::Write;
    (0..n)
        .map(|i| {
            let mut c = TcpStream::connect(addr).unwrap();
            c.set_read_timeout(Some(timeout)).unwrap();
            c.write_all(&[i as u8]).unwrap();
            c
        })
        .collect()
}

/// Lowers the descriptor limit and takes every descriptor left: the files to drop
/// to give some back (at least `at_least` of them).
pub fn take_every_descriptor(at_least: usize) -> Vec<File> {
    let limit = libc::rlimit {
        rlim_cur: 256,
        rlim_max: 256,
    };
    // SAFETY: setrlimit reads the struct we pass and nothing else.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    assert_eq!(rc, 0, "setrlimit: {}", io::Error::last_os_error());
    let mut hogs = Vec::new();
    let exhausted = loop {
        match File::open("/dev/null") {
            Ok(f) => hogs.push(f),
            Err(e) => break e,
        }
    };
    assert_eq!(exhausted.raw_os_error(), Some(libc::EMFILE));
    assert!(hogs.len() >= at_least, "too few descriptors to hog");
    hogs
}
