//! `TaskGroup` (API.md section 7), mirroring CPython's
//! `Lib/test/test_asyncio/test_taskgroups.py`.

use std::cell::RefCell;
use std::future::pending;
use std::rc::Rc;

use shardloop::{spawn, yield_now, Error, TaskGroup};

async fn turns(n: usize) {
    for _ in 0..n {
        yield_now().await;
    }
}

/// Records `name` in `log` when dropped: shows a child's future ended.
struct Ends(&'static str, Rc<RefCell<Vec<&'static str>>>);

impl Drop for Ends {
    fn drop(&mut self) {
        self.1.borrow_mut().push(self.0);
    }
}

// test_taskgroup_01: join waits for every child; their results stay in the handles.
#[test]
fn join_waits_for_every_child() {
    shardloop::run(async {
        let tg = TaskGroup::new();
        let a = tg.spawn(async {
            turns(3).await;
            42
        });
        let b = tg.spawn(async {
            turns(1).await;
            11
        });
        assert_eq!(tg.len(), 2);
        tg.join().await.unwrap();
        assert!(a.is_finished() && b.is_finished());
        assert_eq!(a.await.unwrap() + b.await.unwrap(), 53);
    })
    .unwrap();
}

// test_taskgroup_03: a failing child cancels its siblings; join returns its error
// only after they have ended.
#[test]
fn the_first_panic_cancels_the_siblings_and_join_returns_it() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    shardloop::run(async move {
        let tg = TaskGroup::new();
        let l1 = l.clone();
        let sibling = tg.spawn(async move {
            let _e = Ends("sibling", l1);
            pending::<()>().await
        });
        tg.spawn(async {
            turns(2).await;
            panic!("child failed")
        })
        .detach();
        let err = tg.join().await.unwrap_err();
        l.borrow_mut().push("joined");
        assert!(matches!(err, Error::Panicked(m) if m == "child failed"));
        assert!(matches!(sibling.await, Err(Error::Cancelled)));
    })
    .unwrap();
    assert_eq!(*log.borrow(), ["sibling", "joined"]);
}

// test_taskgroup_07/08: of several failures, join returns the first.
#[test]
fn of_several_panics_join_returns_the_first() {
    shardloop::run(async {
        let tg = TaskGroup::new();
        for (i, delay) in [(1, 5), (2, 1), (3, 3)] {
            tg.spawn(async move {
                turns(delay).await;
                panic!("child {i}")
            })
            .detach();
        }
        let err = tg.join().await.unwrap_err();
        assert!(matches!(err, Error::Panicked(m) if m == "child 2"));
    })
    .unwrap();
}

// asyncio: a child cancelled on its own is not the group's failure.
#[test]
fn a_child_cancelled_on_its_own_is_not_a_failure() {
    shardloop::run(async {
        let tg = TaskGroup::new();
        let victim = tg.spawn(pending::<()>());
        let other = tg.spawn(async {
            turns(3).await;
            "done"
        });
        victim.cancel();
        tg.join().await.unwrap();
        assert!(matches!(victim.await, Err(Error::Cancelled)));
        assert_eq!(
            other.await.unwrap(),
            "done",
            "the sibling was not cancelled"
        );
    })
    .unwrap();
}

// test_taskgroup_05 (the parent cancelled while joining): dropping the join future
// cancels the children still running.
#[test]
fn cancelling_the_joining_task_cancels_the_children() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    shardloop::run(async move {
        let l2 = l.clone();
        let parent = spawn(async move {
            let tg = TaskGroup::new();
            let l3 = l2.clone();
            tg.spawn(async move {
                let _e = Ends("child", l3);
                pending::<()>().await
            })
            .detach();
            tg.join().await
        });
        turns(2).await;
        parent.cancel();
        assert!(matches!(parent.await, Err(Error::Cancelled)));
        turns(2).await;
        l.borrow_mut().push("after");
    })
    .unwrap();
    assert_eq!(*log.borrow(), ["child", "after"]);
}

// A group dropped without join cancels its children.
#[test]
fn dropping_an_unjoined_group_cancels_its_children() {
    shardloop::run(async {
        let tg = TaskGroup::new();
        let child = tg.spawn(pending::<()>());
        drop(tg);
        assert!(matches!(child.await, Err(Error::Cancelled)));
        // Children that already finished are untouched.
        let tg = TaskGroup::new();
        let quick = tg.spawn(async { 1 });
        turns(2).await;
        assert!(tg.is_empty());
        drop(tg);
        assert_eq!(quick.await.unwrap(), 1);
    })
    .unwrap();
}

// test_taskgroup_21 ("TaskGroup is shutting down"): a task spawned while the group
// cancels its children is cancelled too.
#[test]
fn a_task_spawned_into_a_failing_group_is_cancelled() {
    shardloop::run(async {
        let tg = TaskGroup::new();
        let guard = tg.spawn(pending::<()>());
        tg.spawn(async { panic!("fail") }).detach();
        turns(1).await;
        let late = tg.spawn(async { "ran" });
        assert!(matches!(late.await, Err(Error::Cancelled)));
        assert!(matches!(tg.join().await, Err(Error::Panicked(_))));
        assert!(matches!(guard.await, Err(Error::Cancelled)));
    })
    .unwrap();
}

// test_taskgroup_09 and the nested cases: an empty group joins at once; a failure
// inside a nested group reaches the outer one through the child that joined it.
#[test]
fn empty_and_nested_groups() {
    shardloop::run(async {
        TaskGroup::new().join().await.unwrap();
        let outer = TaskGroup::new();
        let outer_sibling = outer.spawn(pending::<()>());
        outer
            .spawn(async {
                let inner = TaskGroup::new();
                inner.spawn(async { panic!("deep") }).detach();
                if let Err(e) = inner.join().await {
                    panic!("inner group: {e}");
                }
            })
            .detach();
        let err = outer.join().await.unwrap_err();
        assert!(
            matches!(&err, Error::Panicked(m) if m.contains("deep")),
            "{err}"
        );
        assert!(matches!(outer_sibling.await, Err(Error::Cancelled)));
    })
    .unwrap();
}
