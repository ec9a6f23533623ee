//! asyncio's per-thread loops: the main thread gets a default loop; worker threads
//! have none until they create one and set it as their current loop.

use std::time::Duration;

fn worker(id: usize) -> Result<String, shardloop::Error> {
    let before = match shardloop::get_event_loop() {
        Ok(_) => "a loop (unexpected)".to_string(),
        Err(e) => format!("error: {e}"),
    };
    let lp = shardloop::EventLoop::builder()
        .name(format!("worker-{id}"))
        .build()?;
    shardloop::set_event_loop(Some(lp.clone()));
    let current = shardloop::get_event_loop()?;
    let answer = lp.run_until_complete(async move {
        shardloop::time::sleep(Duration::from_millis(5 * id as u64)).await;
        id * 10
    })?;
    lp.close()?;
    Ok(format!(
        "worker {id}: before set_event_loop -> {before}; after -> '{}'; computed {answer}",
        current.name()
    ))
}

fn main() -> Result<(), shardloop::Error> {
    let main_loop = shardloop::get_event_loop()?;
    println!(
        "main thread: get_event_loop() -> '{}' (created by default)",
        main_loop.name()
    );

    let workers: Vec<_> = (1..=3)
        .map(|id| std::thread::spawn(move || worker(id)))
        .collect();
    for w in workers {
        println!("{}", w.join().expect("worker thread panicked")?);
    }

    shardloop::set_event_loop(None);
    match shardloop::get_event_loop() {
        Ok(_) => println!("main thread after set_event_loop(None): a loop (unexpected)"),
        Err(e) => println!("main thread after set_event_loop(None): error: {e}"),
    }
    Ok(())
}
