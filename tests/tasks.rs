//! wait, as_completed, shield, task names, current_task and all_tasks (API.md
//! section 7), mirroring CPython's `Lib/test/test_asyncio/test_tasks.py`.

use std::cell::RefCell;
use std::future::pending;
use std::rc::Rc;
use std::time::Duration;

use futures_util::StreamExt;
use shardloop::{
    all_tasks, as_completed, current_task, shield, spawn, wait, yield_now, Error, ReturnWhen,
};

/// Yields to the loop `n` times: a deterministic "later" without clocks.
async fn turns(n: usize) {
    for _ in 0..n {
        yield_now().await;
    }
}

// test_wait: ALL_COMPLETED returns every task done, in input order.
#[test]
fn wait_all_completed_returns_every_task_done() {
    shardloop::run(async {
        let tasks = vec![
            spawn(async {
                turns(3).await;
                'a'
            }),
            spawn(async { 'b' }),
        ];
        let (done, pending) = wait(tasks, ReturnWhen::AllCompleted, None).await;
        assert!(pending.is_empty());
        let mut out = Vec::new();
        for t in done {
            out.push(t.await.unwrap());
        }
        assert_eq!(out, ['a', 'b'], "input order, not completion order");
    })
    .unwrap();
}

// test_wait_first_completed: the slow task is left pending and still runs.
#[test]
fn wait_first_completed_leaves_the_rest_pending_and_running() {
    shardloop::run(async {
        let slow = spawn(async {
            turns(10).await;
            2
        });
        let fast = spawn(async { 1 });
        let (done, pending) = wait(vec![slow, fast], ReturnWhen::FirstCompleted, None).await;
        assert_eq!((done.len(), pending.len()), (1, 1));
        assert!(done[0].is_finished() && !pending[0].is_finished());
        let mut pending = pending;
        assert_eq!(pending.pop().unwrap().await.unwrap(), 2, "not cancelled");
    })
    .unwrap();
}

// test_wait_first_exception: returns at the first failure, before the others end.
#[test]
fn wait_first_exception_returns_at_the_first_failure() {
    shardloop::run(async {
        let long = spawn(pending::<()>());
        let failing = spawn(async {
            turns(2).await;
            panic!("first exception")
        });
        let ok = spawn(async {});
        let (done, pending) = wait(vec![long, failing, ok], ReturnWhen::FirstException, None).await;
        assert_eq!((done.len(), pending.len()), (2, 1));
        assert!(
            done[0].failed() && !done[1].failed(),
            "done keeps input order"
        );
        let mut done = done;
        let ok = done.pop().unwrap();
        let failing = done.pop().unwrap();
        assert!(matches!(failing.await, Err(Error::Panicked(m)) if m == "first exception"));
        ok.await.unwrap();
        pending[0].cancel();
    })
    .unwrap();
}

// asyncio's FIRST_EXCEPTION does not count a cancelled task as an exception: a
// cancel finishes the task, and wait goes on until one raises (or all finish).
#[test]
fn wait_first_exception_does_not_return_at_a_cancel() {
    shardloop::run(async {
        let cancelled = spawn(pending::<()>());
        cancelled.cancel();
        let failing = spawn(async {
            turns(3).await;
            panic!("the exception")
        });
        let long = spawn(pending::<()>());
        let (done, pending) = wait(
            vec![cancelled, failing, long],
            ReturnWhen::FirstException,
            None,
        )
        .await;
        assert_eq!(
            (done.len(), pending.len()),
            (2, 1),
            "returned at the panic, not the cancel"
        );
        assert!(done[0].cancelled() && done[0].failed());
        assert!(!done[1].cancelled() && done[1].failed());
        pending[0].cancel();
    })
    .unwrap();
}

// A task may ask its own handle how it ended while it runs (a supervisor that
// keeps every worker's handle, itself among them): not finished, so neither.
#[test]
fn a_running_task_asking_its_own_handle_is_not_failed_or_cancelled() {
    shardloop::run(async {
        /// The task's own handle, shared with it.
        type Own = Rc<RefCell<Option<shardloop::Task<(bool, bool)>>>>;
        let me = Own::default();
        let task = spawn({
            let me = me.clone();
            async move {
                turns(1).await;
                let me = me.borrow();
                let t = me.as_ref().unwrap();
                (t.failed(), t.cancelled())
            }
        });
        *me.borrow_mut() = Some(task);
        while !me.borrow().as_ref().unwrap().is_finished() {
            shardloop::yield_now().await;
        }
        let task = me.borrow_mut().take().unwrap();
        assert_eq!(task.await.unwrap(), (false, false));
    })
    .unwrap();
}

// test_wait_first_exception_in_wait: with no failure it waits for all.
#[test]
fn wait_first_exception_without_failures_waits_for_all() {
    shardloop::run(async {
        let tasks = vec![spawn(turns(3)), spawn(turns(1))];
        let (done, pending) = wait(tasks, ReturnWhen::FirstException, None).await;
        assert_eq!((done.len(), pending.len()), (2, 0));
        assert!(done.iter().all(|t| !t.failed()));
    })
    .unwrap();
}

// test_wait_with_timeout: the timeout returns what is done so far; nothing cancelled.
#[test]
fn wait_timeout_returns_what_is_done_and_cancels_nothing() {
    shardloop::run(async {
        let never = spawn(pending::<u8>());
        let quick = spawn(async { 7u8 });
        let (done, pending) = wait(
            vec![never, quick],
            ReturnWhen::AllCompleted,
            Some(Duration::from_millis(5)),
        )
        .await;
        assert_eq!((done.len(), pending.len()), (1, 1));
        assert!(!pending[0].is_finished(), "wait does not cancel on timeout");
        pending[0].cancel();
    })
    .unwrap();
}

// test_wait_really_done: a task finished before wait is called counts as done.
#[test]
fn wait_counts_already_finished_tasks_and_accepts_none() {
    shardloop::run(async {
        let t = spawn(async { 1 });
        turns(2).await;
        let (done, pending) = wait(vec![t], ReturnWhen::FirstCompleted, None).await;
        assert_eq!((done.len(), pending.len()), (1, 0));
        let (done, pending) = wait(
            Vec::<shardloop::Task<()>>::new(),
            ReturnWhen::AllCompleted,
            None,
        )
        .await;
        assert!(done.is_empty() && pending.is_empty());
    })
    .unwrap();
}

// test_as_completed: results come in the order the tasks finish.
#[test]
fn as_completed_yields_in_completion_order() {
    shardloop::run(async {
        let tasks = vec![
            spawn(async {
                turns(6).await;
                'c'
            }),
            spawn(async {
                turns(2).await;
                'a'
            }),
            spawn(async {
                turns(4).await;
                'b'
            }),
        ];
        let mut stream = as_completed(tasks);
        assert_eq!(stream.remaining(), 3);
        let mut order = Vec::new();
        while let Some(r) = stream.next().await {
            order.push(r.unwrap());
        }
        assert_eq!(order, ['a', 'b', 'c']);
        assert_eq!(stream.remaining(), 0);
    })
    .unwrap();
}

// test_as_completed_with_timeout / a failing task: failures are items too.
#[test]
fn as_completed_passes_failures_through_as_items() {
    shardloop::run(async {
        let tasks = vec![
            spawn(async {
                turns(3).await;
                1
            }),
            spawn(async { panic!("bad") }),
        ];
        let results: Vec<_> = as_completed(tasks).collect().await;
        assert!(matches!(&results[0], Err(Error::Panicked(m)) if m == "bad"));
        assert_eq!(results[1].as_ref().unwrap(), &1);
        // Bounded by a timeout, a stream of never-ending tasks gives up.
        let never = as_completed(vec![spawn(pending::<()>())]);
        let r = shardloop::time::timeout(Duration::from_millis(2), never.collect::<Vec<_>>()).await;
        assert!(matches!(r, Err(Error::Timeout)));
    })
    .unwrap();
}

// test_shield: cancelling the outer leaves the inner running to completion.
#[test]
fn shield_cancel_leaves_the_inner_task_running() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let lp = shardloop::new_event_loop().unwrap();
    let l = log.clone();
    lp.run_until_complete(async move {
        let l2 = l.clone();
        let inner = spawn(async move {
            turns(3).await;
            l2.borrow_mut().push("inner finished");
            5
        });
        let outer = shield(inner);
        yield_now().await;
        outer.cancel();
        assert!(matches!(outer.await, Err(Error::Cancelled)));
        l.borrow_mut().push("outer cancelled");
        turns(5).await;
    })
    .unwrap();
    assert_eq!(*log.borrow(), ["outer cancelled", "inner finished"]);
}

// test_shield_result: the outer gives the inner's result, failures included.
#[test]
fn shield_passes_the_inner_result_through() {
    shardloop::run(async {
        assert_eq!(shield(spawn(async { 3 })).await.unwrap().unwrap(), 3);
        let failing = shield(spawn(async { panic!("inner") }));
        assert!(matches!(failing.await.unwrap(), Err(Error::Panicked(_))));
        // Cancelling the inner shows through the shield.
        let inner = spawn(pending::<()>());
        inner.cancel();
        assert!(matches!(
            shield(inner).await.unwrap(),
            Err(Error::Cancelled)
        ));
    })
    .unwrap();
}

// test_task_set_name / test_task_default_name: Task-N counts the loop's tasks.
#[test]
fn tasks_are_named_task_n_unless_given_a_name() {
    let lp = shardloop::new_event_loop().unwrap();
    let a = lp.create_task(async {}).unwrap();
    let b = lp.create_task_named("worker", async {}).unwrap();
    let c = lp.create_task(async {}).unwrap();
    assert_eq!(a.name(), format!("Task-{}", a.id()));
    assert_eq!(b.name(), "worker");
    assert_eq!(c.id(), a.id() + 2);
    c.set_name("renamed");
    assert_eq!(c.name(), "renamed");
    assert!(format!("{c:?}").contains("renamed"));
    lp.run_until_complete(async { turns(1).await }).unwrap();
    assert_eq!(c.name(), "renamed", "the name outlives the future");
}

// test_current_task: inside a task it is that task; in a callback or outside, None.
#[test]
fn current_task_is_the_task_being_polled() {
    let lp = shardloop::new_event_loop().unwrap();
    assert!(current_task().is_none());
    let seen_in_callback = Rc::new(RefCell::new(Some(0)));
    let s = seen_in_callback.clone();
    lp.call_soon(move || *s.borrow_mut() = current_task().map(|t| t.id()))
        .unwrap();
    let t = lp
        .create_task(async {
            let me = current_task().unwrap();
            // Another task sees itself, not us.
            let other = spawn(async { current_task().unwrap().id() });
            let other_id = other.id();
            assert_eq!(other.await.unwrap(), other_id);
            assert_eq!(current_task().unwrap(), me, "still us after the await");
            me
        })
        .unwrap();
    let id = t.id();
    let me = lp.run_until_complete(t).unwrap().unwrap();
    assert_eq!(me.id(), id);
    assert!(me.is_finished());
    assert_eq!(*seen_in_callback.borrow(), None);
}

// test_all_tasks: the loop's unfinished tasks, and only those.
#[test]
fn all_tasks_lists_the_unfinished_tasks() {
    let lp = shardloop::new_event_loop().unwrap();
    assert!(all_tasks().is_empty(), "outside a running loop");
    lp.run_until_complete(async {
        let lp = shardloop::get_running_loop().unwrap();
        let waiting = lp.create_task_named("waiting", pending::<()>()).unwrap();
        let done = spawn(async {});
        turns(2).await;
        let names: Vec<String> = all_tasks().iter().map(|t| t.name()).collect();
        assert!(names.contains(&"waiting".to_string()), "{names:?}");
        assert!(!all_tasks().contains(&done.any_task()));
        // A spawned task is listed while it runs; the future of run_until_complete
        // is not a task (it may borrow the caller's stack), unlike in asyncio.
        assert!(current_task().is_none());
        let me = spawn(async { all_tasks().contains(&current_task().unwrap()) });
        assert!(me.await.unwrap(), "a running task lists itself");
        waiting.cancel();
    })
    .unwrap();
}
