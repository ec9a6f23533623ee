//! `run_in_executor` and the default executor (API.md section 4), through the public
//! API: results, panics, close and `run`. What needs the pool's insides (its thread
//! count, its bound, a short idle timeout) is tested in the crate, in
//! `src/executor/tests.rs`.

use shardloop::{Error, EventLoop};

#[test]
fn results_come_back_to_the_loop() {
    let lp = EventLoop::new().unwrap();
    let out = lp
        .run_until_complete(async {
            let lp = shardloop::get_running_loop().unwrap();
            let name = lp
                .run_in_executor(|| std::thread::current().name().map(str::to_string))
                .await
                .unwrap();
            let sum = lp
                .run_in_executor(|| (1..=100u64).sum::<u64>())
                .await
                .unwrap();
            (name, sum)
        })
        .unwrap();
    let (name, sum) = out;
    assert_eq!(sum, 5050);
    let name = name.expect("executor threads are named");
    assert!(
        name.starts_with("shardloop-executor-"),
        "thread name {name}"
    );
    lp.close().unwrap();
}

#[test]
fn a_panic_comes_back_as_panicked_and_the_pool_keeps_working() {
    let lp = EventLoop::new().unwrap();
    lp.run_until_complete({
        let lp = lp.clone();
        async move {
            let boom = lp
                .run_in_executor(|| -> u32 { panic!("boom in a job") })
                .await;
            match boom {
                Err(Error::Panicked(msg)) => assert!(msg.contains("boom in a job"), "{msg}"),
                other => panic!("expected Panicked, got {other:?}"),
            }
            let formatted = lp
                .run_in_executor(|| -> u32 { panic!("job {} failed", 7) })
                .await;
            assert!(matches!(formatted, Err(Error::Panicked(m)) if m == "job 7 failed"));
            assert_eq!(lp.run_in_executor(|| 3).await.unwrap(), 3);
        }
    })
    .unwrap();
    lp.close().unwrap();
}

#[test]
fn close_stops_the_executor_and_later_jobs_are_refused() {
    let lp = EventLoop::new().unwrap();
    let job = lp.run_in_executor(|| 9);
    lp.close().unwrap();
    // A job queued before close still runs; its result can be waited for elsewhere.
    assert_eq!(job.wait().unwrap(), 9);
    assert!(matches!(
        lp.run_in_executor(|| 0).wait(),
        Err(Error::Closed)
    ));
}

#[test]
fn run_closes_the_executor_of_its_loop() {
    let lp = shardloop::run(async {
        let lp = shardloop::get_running_loop().unwrap();
        assert_eq!(lp.run_in_executor(|| 2).await.unwrap(), 2);
        lp
    })
    .unwrap();
    assert!(lp.is_closed());
    assert!(matches!(
        lp.run_in_executor(|| 0).wait(),
        Err(Error::Closed)
    ));
}
