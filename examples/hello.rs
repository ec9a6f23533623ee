//! The seeds' demo: call_soon, call_later, call_at, a trampoline that reschedules
//! itself, and run_forever stopped by call_later(.., stop).

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use shardloop::EventLoop;

fn trampoline(lp: EventLoop, left: Rc<Cell<u32>>) {
    let n = left.get();
    if n == 0 {
        println!("trampoline: done");
        return;
    }
    left.set(n - 1);
    let next = lp.clone();
    lp.call_soon(move || trampoline(next, left))
        .expect("the loop is open");
}

fn main() -> Result<(), shardloop::Error> {
    let lp = shardloop::get_event_loop()?;
    let start = lp.time();
    lp.call_soon(|| println!("call_soon: runs on the next iteration"))?;
    lp.call_later(Duration::from_millis(20), move || {
        println!(
            "call_later: 20 ms later ({:?} after start)",
            start.elapsed()
        )
    })?;
    lp.call_at(lp.time() + Duration::from_millis(10), move || {
        println!(
            "call_at: at start + 10 ms ({:?} after start)",
            start.elapsed()
        )
    })?;
    trampoline(lp.clone(), Rc::new(Cell::new(1000)));
    let stopper = lp.clone();
    lp.call_later(Duration::from_millis(50), move || {
        println!("stopping the loop");
        stopper.stop();
    })?;
    lp.run_forever()?;
    let answer = lp.run_until_complete(async {
        shardloop::time::sleep(Duration::from_millis(5)).await;
        42
    })?;
    println!("run_until_complete: {answer}");
    lp.close()?;
    Ok(())
}
