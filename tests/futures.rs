//! `LoopFuture` and `gather` (API.md section 7), mirroring CPython's
//! `Lib/test/test_asyncio/test_futures.py` and the gather tests of `test_tasks.py`.

use std::cell::RefCell;
use std::rc::Rc;

use shardloop::{gather, yield_now, Error, EventLoop, LoopFuture};

fn lp() -> EventLoop {
    shardloop::new_event_loop().unwrap()
}

#[test]
fn a_future_is_set_once() {
    let lp = lp();
    let f: LoopFuture<u32> = lp.create_future();
    assert!(!f.done() && !f.cancelled());
    assert_eq!(f.result().map(|r| r.is_ok()), None);
    f.set_result(1).unwrap();
    assert!(f.done() && !f.cancelled());
    assert!(matches!(f.set_result(2), Err(Error::InvalidState)));
    assert!(!f.cancel(), "a done future cannot be cancelled");
    assert_eq!(lp.run_until_complete(f.clone()).unwrap().unwrap(), 1);
}

#[test]
fn a_cancelled_future_resolves_every_awaiter_to_cancelled() {
    let lp = lp();
    let f: LoopFuture<u32> = lp.create_future();
    let awaiters: Vec<_> = (0..3)
        .map(|_| {
            let f = f.clone();
            lp.create_task(f).unwrap()
        })
        .collect();
    lp.run_until_complete(async {
        yield_now().await;
        assert!(f.cancel());
        assert!(!f.cancel(), "only once");
        for a in awaiters {
            assert!(matches!(a.await.unwrap(), Err(Error::Cancelled)));
        }
    })
    .unwrap();
    assert!(f.done() && f.cancelled());
    assert!(matches!(f.set_result(3), Err(Error::InvalidState)));
}

#[test]
fn every_awaiter_gets_the_result() {
    let lp = lp();
    let f: LoopFuture<String> = lp.create_future();
    let awaiters: Vec<_> = (0..3)
        .map(|_| {
            let f = f.clone();
            lp.create_task(f).unwrap()
        })
        .collect();
    lp.call_soon({
        let f = f.clone();
        move || f.set_result("hi".to_string()).unwrap()
    })
    .unwrap();
    for a in awaiters {
        assert_eq!(lp.run_until_complete(a).unwrap().unwrap().unwrap(), "hi");
    }
}

#[test]
fn done_callbacks_run_through_call_soon_in_order() {
    // test_futures.py test_callbacks_invoked_on_set_result: not inside set_result,
    // in the order added; one added after completion is scheduled too.
    let lp = lp();
    let f: LoopFuture<u32> = lp.create_future();
    let calls = Rc::new(RefCell::new(Vec::new()));
    for i in 1..=2 {
        let calls = calls.clone();
        f.add_done_callback(move |f| calls.borrow_mut().push((i, f.result().unwrap().unwrap())));
    }
    f.set_result(5).unwrap();
    assert!(
        calls.borrow().is_empty(),
        "scheduled, not run inside set_result"
    );
    let calls2 = calls.clone();
    f.add_done_callback(move |f| calls2.borrow_mut().push((3, f.result().unwrap().unwrap())));
    lp.run_until_complete(async {
        yield_now().await;
    })
    .unwrap();
    assert_eq!(*calls.borrow(), [(1, 5), (2, 5), (3, 5)]);
}

#[test]
fn a_cancel_runs_the_done_callbacks_too() {
    let lp = lp();
    let f: LoopFuture<u32> = lp.create_future();
    let saw = Rc::new(RefCell::new(None));
    f.add_done_callback({
        let saw = saw.clone();
        move |f| *saw.borrow_mut() = Some(f.cancelled())
    });
    f.cancel();
    lp.run_until_complete(yield_now()).unwrap();
    assert_eq!(*saw.borrow(), Some(true));
}

#[test]
fn gather_returns_outputs_in_input_order() {
    let lp = lp();
    let out = lp
        .run_until_complete(gather((0..5u64).map(|i| async move {
            // Later inputs finish first.
            for _ in 0..(5 - i) {
                yield_now().await;
            }
            i * 10
        })))
        .unwrap()
        .unwrap();
    assert_eq!(out, [0, 10, 20, 30, 40]);
}

#[test]
fn gather_returns_the_first_failure_and_the_others_run_on() {
    let lp = lp();
    let finished = Rc::new(RefCell::new(Vec::new()));
    let result = lp
        .run_until_complete({
            let finished = finished.clone();
            gather((0..3u32).map(move |i| {
                let finished = finished.clone();
                Box::pin(async move {
                    for _ in 0..(3 * i + 1) {
                        yield_now().await;
                    }
                    if i == 1 {
                        panic!("task {i} fails");
                    }
                    finished.borrow_mut().push(i);
                    i
                })
            }))
        })
        .unwrap();
    match result {
        Err(Error::Panicked(msg)) => assert!(msg.contains("task 1 fails"), "{msg}"),
        other => panic!("expected the panic, got {other:?}"),
    }
    // The slowest task was still running when gather returned; it finishes anyway.
    lp.run_until_complete(async {
        for _ in 0..20 {
            yield_now().await;
        }
    })
    .unwrap();
    assert_eq!(*finished.borrow(), [0, 2]);
}

// test_tasks.py's test_cancel_gather_1 / test_gather_cancel: cancelling the task
// that awaits gather (or a timeout around it) cancels the tasks gather runs.
#[test]
fn a_cancelled_gather_cancels_its_tasks() {
    /// Records, when a child's future is dropped, whether it had finished.
    struct Child(Rc<RefCell<Vec<bool>>>, bool);
    impl Drop for Child {
        fn drop(&mut self) {
            self.0.borrow_mut().push(self.1);
        }
    }
    let children = |ends: &Rc<RefCell<Vec<bool>>>| {
        (0..3)
            .map(|_| {
                let ends = ends.clone();
                Box::pin(async move {
                    let mut child = Child(ends, false);
                    std::future::pending::<()>().await;
                    child.1 = true;
                })
            })
            .collect::<Vec<_>>()
    };
    let lp = lp();
    let ends = Rc::new(RefCell::new(Vec::new()));
    lp.run_until_complete({
        let ends = ends.clone();
        async move {
            let outer = shardloop::spawn(gather(children(&ends)));
            for _ in 0..3 {
                yield_now().await;
            }
            assert!(ends.borrow().is_empty(), "the children run");
            outer.cancel();
            assert!(matches!(outer.await, Err(Error::Cancelled)));
            for _ in 0..3 {
                yield_now().await;
            }
            assert_eq!(*ends.borrow(), [false; 3], "each child was cancelled");

            ends.borrow_mut().clear();
            let timed_out = shardloop::time::timeout(
                std::time::Duration::from_millis(1),
                gather(children(&ends)),
            )
            .await;
            assert!(timed_out.is_err());
            for _ in 0..3 {
                yield_now().await;
            }
            assert_eq!(*ends.borrow(), [false; 3], "a timeout cancels them too");
        }
    })
    .unwrap();
}

#[test]
fn gather_of_nothing_is_empty_and_needs_a_running_loop() {
    let lp = lp();
    let none: Vec<std::future::Ready<u8>> = Vec::new();
    assert_eq!(
        lp.run_until_complete(gather(none)).unwrap().unwrap(),
        Vec::<u8>::new()
    );
    let outside = futures_util::FutureExt::now_or_never(gather(vec![async { 1 }]));
    assert!(matches!(outside, Some(Err(Error::NoRunningLoop))));
}
