//! `shardloop::channel`: flume channels between shards, loops and plain threads.

use std::thread;
use std::time::Duration;

use shardloop::channel::{self, RecvError, TryRecvError, TrySendError};
use shardloop::{current_shard, Runtime};

fn runtime() -> Runtime {
    Runtime::builder().shards(2).build().unwrap()
}

#[test]
fn shard_to_shard_through_a_bounded_channel() {
    let rt = runtime();
    let (tx, rx) = channel::bounded::<u64>(4);
    let producer = rt.submit_to(0, move || async move {
        for i in 1..=1000 {
            tx.send_async(i).await.unwrap();
        }
        current_shard()
    });
    let consumer = rt.submit_to(1, move || async move {
        let mut sum = 0;
        while let Ok(i) = rx.recv_async().await {
            sum += i;
        }
        (sum, current_shard())
    });
    assert_eq!(producer.wait().unwrap(), Some(0));
    assert_eq!(consumer.wait().unwrap(), (500_500, Some(1)));
}

#[test]
fn plain_threads_to_a_shard_and_back() {
    let rt = runtime();
    let (to_shard, shard_rx) = channel::unbounded::<u64>();
    let (shard_tx, from_shard) = channel::bounded::<u64>(8);
    // The shard doubles whatever arrives until every sender is gone.
    let worker = rt.submit_to(1, move || async move {
        let mut n = 0;
        while let Ok(v) = shard_rx.recv_async().await {
            shard_tx.send_async(v * 2).await.unwrap();
            n += 1;
        }
        n
    });
    let senders: Vec<_> = (0..4u64)
        .map(|t| {
            let tx = to_shard.clone();
            thread::spawn(move || (0..250).for_each(|i| tx.send(t * 1000 + i).unwrap()))
        })
        .collect();
    drop(to_shard);
    // A plain thread receives with the blocking recv.
    let mut total = 0;
    for _ in 0..1000 {
        total += from_shard.recv().unwrap();
    }
    senders.into_iter().for_each(|s| s.join().unwrap());
    assert_eq!(worker.wait().unwrap(), 1000);
    let expected: u64 = (0..4u64)
        .flat_map(|t| (0..250).map(move |i| 2 * (t * 1000 + i)))
        .sum();
    assert_eq!(total, expected);
    // The worker dropped its sender: the receiver sees the end.
    assert_eq!(from_shard.recv(), Err(RecvError::Disconnected));
}

#[test]
fn a_gone_side_gives_clear_errors() {
    let (tx, rx) = channel::bounded::<String>(1);
    drop(rx);
    let err = tx.send("lost?".to_string()).unwrap_err();
    assert_eq!(err.to_string(), "sending on a closed channel");
    assert_eq!(err.into_inner(), "lost?", "the value comes back");

    let (tx, rx) = channel::unbounded::<u8>();
    tx.send(1).unwrap();
    drop(tx);
    assert_eq!(rx.recv(), Ok(1), "what was sent is still received");
    assert_eq!(rx.recv(), Err(RecvError::Disconnected));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    assert_eq!(
        RecvError::Disconnected.to_string(),
        "receiving on a closed channel"
    );

    // The same on a shard, awaiting.
    let rt = runtime();
    let (tx, rx) = channel::bounded::<u8>(1);
    let waiting = rt.submit_to(0, move || async move { rx.recv_async().await });
    thread::sleep(Duration::from_millis(10));
    drop(tx);
    assert_eq!(waiting.wait().unwrap(), Err(RecvError::Disconnected));
}

#[test]
fn a_full_channel_suspends_the_task_not_the_shard() {
    let rt = runtime();
    let (tx, rx) = channel::bounded::<u32>(1);
    tx.try_send(0).unwrap();
    assert!(matches!(tx.try_send(1), Err(TrySendError::Full(1))));
    // Shard 0's task waits for room ...
    let producer = rt.submit_to(0, move || async move { tx.send_async(2).await.is_ok() });
    // ... while shard 0 keeps serving other work.
    for i in 0..5 {
        assert_eq!(rt.submit_to(0, move || async move { i }).wait().unwrap(), i);
    }
    assert!(!producer.is_finished(), "no room was made yet");
    assert_eq!(rx.recv().unwrap(), 0);
    assert!(producer.wait().unwrap());
    assert_eq!(rx.recv().unwrap(), 2);
}
