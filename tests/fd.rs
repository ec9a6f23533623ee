//! Raw-fd callbacks (API.md section 4): `add_reader`, `add_writer`, `remove_reader`,
//! `remove_writer`, with asyncio's semantics: level-triggered, adding again replaces,
//! remove says whether there was one, a closed loop refuses and releases them.
//!
//! Most tests step the loop one iteration at a time (`stop()` then `run_forever()` runs
//! exactly one) on a loop that polls for I/O on every iteration (`event_interval(1)`),
//! so "called on each iteration while ready" is checked iteration by iteration. No
//! test asserts how long anything takes; loops that run freely are stopped by a
//! safety timer if a wakeup is lost.

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;

use shardloop::{Error, EventLoop};

const HANG_LIMIT: Duration = Duration::from_secs(60);

/// A loop that polls for I/O on every iteration.
fn stepping_loop() -> EventLoop {
    EventLoop::builder().event_interval(1).build().unwrap()
}

/// Runs exactly one iteration.
fn step(lp: &EventLoop) {
    lp.stop();
    lp.run_forever().unwrap();
}

/// A non-blocking pipe: (read end, write end).
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into the two-element array we pass.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", io::Error::last_os_error());
    // SAFETY: both descriptors were just created by pipe2 and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn write_fd(fd: &OwnedFd, data: &[u8]) {
    std::fs::File::from(fd.try_clone().unwrap())
        .write_all(data)
        .unwrap();
}

/// Reads what is there now (the fd is non-blocking).
fn drain(fd: &OwnedFd) -> Vec<u8> {
    let mut f = std::fs::File::from(fd.try_clone().unwrap());
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match f.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return out,
            Err(e) => panic!("read: {e}"),
        }
    }
}

fn counter() -> (Rc<Cell<u32>>, impl FnMut() + 'static) {
    let n = Rc::new(Cell::new(0));
    let m = n.clone();
    (n, move || m.set(m.get() + 1))
}

#[test]
fn reader_is_called_on_each_iteration_while_data_is_unread() {
    let lp = stepping_loop();
    let (r, w) = pipe();
    let (calls, cb) = counter();
    lp.add_reader(r.as_raw_fd(), cb).unwrap();
    step(&lp);
    step(&lp);
    assert_eq!(calls.get(), 0, "nothing to read yet");
    write_fd(&w, b"x");
    for expected in 1..=4 {
        step(&lp);
        assert_eq!(calls.get(), expected, "level-triggered: again while unread");
    }
    assert_eq!(drain(&r), b"x");
    step(&lp);
    step(&lp);
    assert_eq!(calls.get(), 4, "not called once the data is read");
    write_fd(&w, b"y");
    step(&lp);
    assert_eq!(calls.get(), 5, "called again for new data");
    assert!(lp.remove_reader(r.as_raw_fd()));
}

#[test]
fn adding_a_reader_again_replaces_the_callback() {
    let lp = stepping_loop();
    let (r, w) = pipe();
    let token = Rc::new(());
    let (first, mut first_cb) = counter();
    let held = token.clone();
    lp.add_reader(r.as_raw_fd(), move || {
        let _ = &held;
        first_cb()
    })
    .unwrap();
    assert_eq!(Rc::strong_count(&token), 2);
    let (second, second_cb) = counter();
    lp.add_reader(r.as_raw_fd(), second_cb).unwrap();
    assert_eq!(
        Rc::strong_count(&token),
        1,
        "the replaced callback is dropped"
    );
    write_fd(&w, b"x");
    step(&lp);
    assert_eq!((first.get(), second.get()), (0, 1));
    assert!(lp.remove_reader(r.as_raw_fd()));
}

#[test]
fn remove_reports_whether_a_callback_was_registered() {
    let lp = stepping_loop();
    let (r, w) = pipe();
    assert!(!lp.remove_reader(r.as_raw_fd()));
    assert!(!lp.remove_writer(w.as_raw_fd()));
    let (calls, cb) = counter();
    lp.add_reader(r.as_raw_fd(), cb).unwrap();
    assert!(!lp.remove_writer(r.as_raw_fd()), "a reader is not a writer");
    assert!(lp.remove_reader(r.as_raw_fd()));
    assert!(!lp.remove_reader(r.as_raw_fd()));
    write_fd(&w, b"x");
    step(&lp);
    step(&lp);
    assert_eq!(calls.get(), 0, "a removed reader is never called");
}

#[test]
fn writer_is_called_while_writable_and_can_remove_itself() {
    let lp = stepping_loop();
    let (_r, w) = pipe();
    let fd = w.as_raw_fd();
    let calls = Rc::new(Cell::new(0));
    let (c, l) = (calls.clone(), lp.clone());
    lp.add_writer(fd, move || {
        c.set(c.get() + 1);
        if c.get() == 3 {
            assert!(l.remove_writer(fd));
        }
    })
    .unwrap();
    for _ in 0..6 {
        step(&lp);
    }
    assert_eq!(calls.get(), 3);
    assert!(!lp.remove_writer(fd));
}

#[test]
fn reader_and_writer_on_one_fd_are_independent() {
    let lp = stepping_loop();
    let (a, mut b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let fd = a.as_raw_fd();
    let (reads, rcb) = counter();
    let (writes, wcb) = counter();
    lp.add_reader(fd, rcb).unwrap();
    lp.add_writer(fd, wcb).unwrap();
    step(&lp);
    assert_eq!(
        (reads.get(), writes.get()),
        (0, 1),
        "writable, nothing to read"
    );
    b.write_all(b"data").unwrap();
    step(&lp);
    assert_eq!((reads.get(), writes.get()), (1, 2), "both ready");
    assert!(lp.remove_writer(fd));
    step(&lp);
    assert_eq!((reads.get(), writes.get()), (2, 2), "the reader stays");
    assert!(lp.remove_reader(fd));
    step(&lp);
    assert_eq!((reads.get(), writes.get()), (2, 2));
}

#[test]
fn a_reader_may_replace_itself_while_it_runs() {
    let lp = stepping_loop();
    let (r, w) = pipe();
    let fd = r.as_raw_fd();
    let log = Rc::new(RefCell::new(Vec::new()));
    let (l, lg) = (lp.clone(), log.clone());
    lp.add_reader(fd, move || {
        lg.borrow_mut().push("first");
        let lg2 = lg.clone();
        l.add_reader(fd, move || lg2.borrow_mut().push("second"))
            .unwrap();
    })
    .unwrap();
    write_fd(&w, b"x");
    step(&lp);
    step(&lp);
    step(&lp);
    assert_eq!(*log.borrow(), ["first", "second", "second"]);
    assert!(lp.remove_reader(fd));
}

#[test]
fn a_panicking_reader_is_reported_and_still_called_next_time() {
    let lp = stepping_loop();
    let (r, w) = pipe();
    let reported = Rc::new(RefCell::new(Vec::new()));
    let rep = reported.clone();
    lp.set_exception_handler(move |ctx| rep.borrow_mut().push(ctx.to_string()));
    lp.add_reader(r.as_raw_fd(), || panic!("reader blew up"))
        .unwrap();
    write_fd(&w, b"x");
    step(&lp);
    step(&lp);
    let reported = reported.borrow();
    assert_eq!(reported.len(), 2, "{reported:?}");
    assert!(reported[0].contains("reader blew up"), "{reported:?}");
}

#[test]
fn a_reader_drives_a_free_running_loop_until_eof() {
    let lp = EventLoop::new().unwrap();
    let (r, w) = pipe();
    let fd = r.as_raw_fd();
    let got = Rc::new(RefCell::new(Vec::new()));
    let (l, g) = (lp.clone(), got.clone());
    let reader = std::fs::File::from(r);
    lp.add_reader(fd, move || {
        let mut buf = [0u8; 1024];
        match (&reader).read(&mut buf) {
            Ok(0) => {
                l.remove_reader(fd);
                l.stop();
            }
            Ok(n) => g.borrow_mut().extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("read: {e}"),
        }
    })
    .unwrap();
    // Another thread writes in pieces and closes: the loop sleeps in between.
    let writer = std::thread::spawn(move || {
        let mut f = std::fs::File::from(w);
        for i in 0..50u8 {
            f.write_all(&[i; 100]).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    let stopper = lp.clone();
    let guard = lp.call_later(HANG_LIMIT, move || stopper.stop()).unwrap();
    lp.run_forever().unwrap();
    assert!(
        !lp.remove_reader(fd),
        "stopped at EOF, not by the safety timer"
    );
    guard.cancel();
    writer.join().unwrap();
    let expected: Vec<u8> = (0..50u8).flat_map(|i| [i; 100]).collect();
    assert!(*got.borrow() == expected, "bytes differ");
}

#[test]
fn a_closed_loop_refuses_watchers_and_drops_the_ones_it_had() {
    let lp = stepping_loop();
    let (r, w) = pipe();
    let token = Rc::new(());
    let held = token.clone();
    lp.add_reader(r.as_raw_fd(), move || {
        let _ = &held;
    })
    .unwrap();
    lp.add_writer(w.as_raw_fd(), || ()).unwrap();
    lp.close().unwrap();
    assert_eq!(Rc::strong_count(&token), 1, "callbacks released on close");
    assert!(matches!(
        lp.add_reader(r.as_raw_fd(), || ()),
        Err(Error::Closed)
    ));
    assert!(matches!(
        lp.add_writer(w.as_raw_fd(), || ()),
        Err(Error::Closed)
    ));
    assert!(!lp.remove_reader(r.as_raw_fd()));
    assert!(!lp.remove_writer(w.as_raw_fd()));
}

#[test]
fn fds_that_cannot_be_watched_are_an_error() {
    let lp = stepping_loop();
    assert!(matches!(lp.add_reader(-1, || ()), Err(Error::Io(_))));
    // epoll refuses regular files.
    let file = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
    assert!(matches!(
        lp.add_reader(file.as_raw_fd(), || ()),
        Err(Error::Io(_))
    ));
    assert!(!lp.remove_reader(file.as_raw_fd()));
}

#[test]
fn an_fd_closed_and_reopened_under_the_same_number_is_watched_again() {
    let lp = stepping_loop();
    let (r, w) = pipe();
    let fd = r.as_raw_fd();
    lp.add_reader(fd, || ()).unwrap();
    // The number is made to name another pipe without remove_reader (a caller's
    // mistake asyncio allows too): the kernel forgets the old registration, our table
    // does not. dup2 swaps it in one step, so no other test can grab the number.
    let (r2, w2) = pipe();
    // SAFETY: both numbers are open descriptors this test owns; afterwards `r` owns
    // the new pipe's read end under `fd`, and `r2` still owns its own number.
    let rc = unsafe { libc::dup2(r2.as_raw_fd(), fd) };
    assert_eq!(rc, fd, "dup2: {}", io::Error::last_os_error());
    drop((r2, w));
    let (calls, cb) = counter();
    lp.add_reader(fd, cb).unwrap();
    write_fd(&w2, b"x");
    step(&lp);
    assert_eq!(calls.get(), 1);
    assert!(lp.remove_reader(fd));
}
