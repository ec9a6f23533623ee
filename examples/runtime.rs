//! A tour of the thread-per-core runtime: broadcast, submit_to, key routing, a
//! cross-shard channel, stats and a graceful shutdown with its report.
//!
//! `cargo run --example runtime`

use std::time::Duration;

use shardloop::{channel, current_shard, time::sleep, Runtime};

fn main() -> Result<(), shardloop::Error> {
    let rt = Runtime::builder()
        .shards(num_cpus::get().max(2))
        .pin_to_cores(true)
        .thread_name("shard")
        .build()?;
    println!(
        "{} shards, pinned to CPUs {:?}",
        rt.len(),
        (0..rt.len()).map(|i| rt.pinned_cpu(i)).collect::<Vec<_>>()
    );

    // One future per shard; results come back in shard order.
    for hello in rt.broadcast(|i| async move {
        format!(
            "hello from shard {i} (current_shard = {:?})",
            current_shard()
        )
    }) {
        println!("{}", hello.wait()?);
    }

    // Route keys: the same key always lands on the same shard, so per-key state can
    // live in that shard's thread without locks.
    for user in ["alice", "bob", "carol", "alice"] {
        let shard = rt.shard_for(user);
        let greeting = rt
            .submit_to(shard, move || async move {
                format!("{user} is served by shard {:?}", current_shard())
            })
            .wait()?;
        println!("{greeting}");
    }

    // Shard 0 streams numbers to the last shard through a bounded channel.
    let last = rt.len() - 1;
    let (tx, rx) = channel::bounded::<u64>(8);
    let producer = rt.submit_to(0, move || async move {
        for i in 1..=100 {
            tx.send_async(i).await.expect("the consumer is alive");
        }
    });
    let consumer = rt.submit_to(last, move || async move {
        let mut sum = 0;
        while let Ok(i) = rx.recv_async().await {
            sum += i;
        }
        sum
    });
    producer.wait()?;
    println!("shard {last} summed the stream: {}", consumer.wait()?);

    for (i, s) in rt.stats()?.iter().enumerate() {
        println!(
            "shard {i}: {} callbacks run, {} tasks finished",
            s.callbacks_run, s.tasks_finished
        );
    }

    // Work still in flight at shutdown: one task finishes within the grace period,
    // one would sleep for an hour and is cancelled.
    let quick = rt.submit_to(0, || async {
        sleep(Duration::from_millis(10)).await;
        "quick task done"
    });
    let slow = rt.submit_to(last, || async {
        sleep(Duration::from_secs(3600)).await;
        "never"
    });
    let report = rt.shutdown(Duration::from_millis(200))?;
    println!("{}", quick.wait()?);
    println!("slow task: {:?}", slow.wait());
    for s in report.shards() {
        println!(
            "shard {}: {} finished, {} cancelled, {} callbacks dropped during shutdown",
            s.shard, s.tasks_finished, s.tasks_cancelled, s.callbacks_dropped
        );
    }
    println!(
        "total: {} finished, {} cancelled",
        report.finished(),
        report.cancelled()
    );
    Ok(())
}
