//! `shardloop::sync` against tokio's equivalents on a current-thread runtime: a
//! `Queue` between two tasks of one loop against `mpsc::unbounded_channel`, and
//! uncontended `Lock` / `Semaphore` acquire-and-release against tokio's `Mutex` /
//! `Semaphore`.

use std::time::Duration;

use shardloop::sync::{Lock, Queue, Semaphore};
use shardloop::EventLoop;

use super::{timed, tokio_rt};

/// `n` items from a producer task to a consumer task through an unbounded queue.
pub fn sl_queue(n: u64) -> Duration {
    let lp = EventLoop::new().unwrap();
    let q = Queue::<u64>::new(0);
    timed(|| {
        let consumer = lp
            .create_task({
                let q = q.clone();
                async move {
                    let mut sum = 0;
                    for _ in 0..n {
                        sum += q.get().await.unwrap();
                    }
                    sum
                }
            })
            .unwrap();
        let producer = lp
            .create_task({
                let q = q.clone();
                async move {
                    for i in 0..n {
                        q.put(i).await.unwrap();
                        if i % 64 == 0 {
                            // Let the consumer run now and then, as a real producer does.
                            shardloop::yield_now().await;
                        }
                    }
                }
            })
            .unwrap();
        let sum = lp.run_until_complete(consumer).unwrap().unwrap();
        lp.run_until_complete(producer).unwrap().unwrap();
        assert_eq!(sum, n * (n - 1) / 2);
    })
}

pub fn tokio_mpsc(n: u64) -> Duration {
    let rt = tokio_rt();
    let local = tokio::task::LocalSet::new();
    timed(|| {
        local.block_on(&rt, async {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
            let consumer = tokio::task::spawn_local(async move {
                let mut sum = 0;
                for _ in 0..n {
                    sum += rx.recv().await.unwrap();
                }
                sum
            });
            let producer = tokio::task::spawn_local(async move {
                for i in 0..n {
                    tx.send(i).unwrap();
                    if i % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            });
            assert_eq!(consumer.await.unwrap(), n * (n - 1) / 2);
            producer.await.unwrap();
        })
    })
}

/// `n` uncontended acquire-release pairs of a `Lock`, in one task.
pub fn sl_lock(n: u64) -> Duration {
    let lp = EventLoop::new().unwrap();
    let lock = Lock::new();
    timed(|| {
        lp.run_until_complete(async {
            for _ in 0..n {
                drop(lock.acquire().await);
            }
        })
        .unwrap();
    })
}

pub fn tokio_mutex(n: u64) -> Duration {
    let rt = tokio_rt();
    let lock = tokio::sync::Mutex::new(());
    timed(|| {
        rt.block_on(async {
            for _ in 0..n {
                drop(lock.lock().await);
            }
        })
    })
}

/// `n` uncontended acquire-release pairs of a `Semaphore`, in one task.
pub fn sl_semaphore(n: u64) -> Duration {
    let lp = EventLoop::new().unwrap();
    let sem = Semaphore::new(4);
    timed(|| {
        lp.run_until_complete(async {
            for _ in 0..n {
                drop(sem.acquire().await);
            }
        })
        .unwrap();
    })
}

pub fn tokio_semaphore(n: u64) -> Duration {
    let rt = tokio_rt();
    let sem = tokio::sync::Semaphore::new(4);
    timed(|| {
        rt.block_on(async {
            for _ in 0..n {
                drop(sem.acquire().await.unwrap());
            }
        })
    })
}
