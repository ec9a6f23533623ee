//! API.md section 7's calls as written there (the streams part is in
//! `tests/streams.rs`): each compiles against the public API and does what the
//! contract says.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use shardloop::{Error, EventLoop};

struct Echo {
    t: Option<shardloop::Transport>,
}

impl shardloop::Protocol for Echo {
    fn connection_made(&mut self, t: shardloop::Transport) {
        self.t = Some(t)
    }
    fn data_received(&mut self, data: &[u8]) {
        self.t.as_ref().unwrap().write(data)
    }
    fn eof_received(&mut self) -> bool {
        false
    }
    fn connection_lost(&mut self, _err: Option<std::io::Error>) {}
}

/// A client protocol that records what comes back.
#[derive(Default)]
struct Collect {
    got: Vec<u8>,
}

impl shardloop::Protocol for Collect {
    fn connection_made(&mut self, _t: shardloop::Transport) {}
    fn data_received(&mut self, data: &[u8]) {
        self.got.extend_from_slice(data)
    }
}

#[test]
fn futures_and_combinators() {
    let lp = EventLoop::new().unwrap();
    let seen = Rc::new(RefCell::new(None));
    lp.run_until_complete(async {
        let f: shardloop::LoopFuture<u32> = lp.create_future();
        let s = seen.clone();
        f.add_done_callback(move |f: &shardloop::LoopFuture<u32>| {
            *s.borrow_mut() = f.result().map(|r| r.unwrap())
        });
        f.set_result(7).unwrap();
        assert!(matches!(f.set_result(8), Err(Error::InvalidState)));
        assert!(f.done() && !f.cancelled() && !f.cancel());
        let v: Result<u32, Error> = f.clone().await;
        assert_eq!(v.unwrap(), 7);

        let fut_a =
            Box::pin(async { 1u32 }) as std::pin::Pin<Box<dyn std::future::Future<Output = u32>>>;
        let fut_b = Box::pin(async { 2u32 });
        let vs: Vec<u32> = shardloop::gather(vec![fut_a, fut_b]).await.unwrap();
        assert_eq!(vs, [1, 2]);

        let tasks = vec![
            shardloop::spawn(async { 1 }),
            shardloop::spawn(std::future::pending::<i32>()),
        ];
        let (done, pending) = shardloop::wait(
            tasks,
            shardloop::ReturnWhen::FirstCompleted,
            Some(Duration::from_millis(50)),
        )
        .await;
        assert_eq!((done.len(), pending.len()), (1, 1));
        let task = pending.into_iter().next().unwrap();
        let t2 = shardloop::shield(task);
        t2.cancel();
        assert!(matches!(t2.await, Err(Error::Cancelled)));
        shardloop::yield_now().await;

        let tg = shardloop::TaskGroup::new();
        let a: shardloop::Task<u32> = tg.spawn(async { 1 });
        tg.join().await.unwrap();
        assert_eq!(a.await.unwrap(), 1);
        let tg = shardloop::TaskGroup::new();
        let other = tg.spawn(std::future::pending::<()>());
        tg.spawn(async { panic!("first") }).detach();
        assert!(matches!(tg.join().await, Err(Error::Panicked(m)) if m == "first"));
        assert!(matches!(other.await, Err(Error::Cancelled)));
    })
    .unwrap();
    lp.run_until_complete(shardloop::yield_now()).unwrap();
    assert_eq!(
        *seen.borrow(),
        Some(7),
        "the done callback ran through call_soon"
    );
}

// API.md writes `q.put_nowait(2)?; q.get_nowait()?;` in code whose `?`s return
// shardloop::Error: the queue's and the barrier's errors convert.
#[test]
fn queue_and_barrier_errors_convert_for_question_marks() {
    fn round(q: &shardloop::sync::Queue<u32>) -> Result<u32, shardloop::Error> {
        q.put_nowait(2)?;
        q.get_nowait().map_err(shardloop::Error::from)
    }
    let lp = EventLoop::new().unwrap();
    lp.run_until_complete(async {
        let q = shardloop::sync::Queue::<u32>::new(1);
        assert!(matches!(round(&q), Ok(2)));
        q.put_nowait(1).unwrap();
        assert!(matches!(round(&q), Err(shardloop::Error::QueueFull)));
        q.get_nowait().unwrap();
        let empty = || -> Result<u32, shardloop::Error> { Ok(q.get_nowait()?) };
        assert!(matches!(empty(), Err(shardloop::Error::QueueEmpty)));
        q.shutdown(false);
        assert!(matches!(round(&q), Err(shardloop::Error::QueueShutDown)));
        assert_eq!(shardloop::Error::QueueFull.to_string(), "the queue is full");

        let barrier = shardloop::sync::Barrier::new(2);
        barrier.abort();
        let broken: Result<usize, shardloop::Error> = async { Ok(barrier.wait().await?) }.await;
        assert!(matches!(broken, Err(shardloop::Error::BrokenBarrier)));
    })
    .unwrap();
}

#[test]
fn sync_primitives() {
    let lp = EventLoop::new().unwrap();
    lp.run_until_complete(async {
        let ev = shardloop::sync::Event::new();
        ev.set();
        ev.clear();
        assert!(!ev.is_set());
        ev.set();
        ev.wait().await;
        let lock = shardloop::sync::Lock::new();
        let g = lock.acquire().await;
        assert!(lock.locked());
        drop(g);
        let sem = shardloop::sync::Semaphore::new(2);
        let _p = sem.acquire().await;
        assert_eq!(sem.available_permits(), 1);
        let maxsize = 1;
        let q = shardloop::sync::Queue::<u32>::new(maxsize); // 0 = unbounded
        q.put(1).await.unwrap();
        let v = q.get().await;
        assert_eq!(v, Ok(1));
        q.put_nowait(2).unwrap();
        let full = q.put_nowait(3).unwrap_err(); // Err when full, with the value back
        assert_eq!(full.into_inner(), 3);
        q.get_nowait().unwrap();
        assert!(q.get_nowait().is_err()); // Err when empty
        assert!(q.qsize() == 0 && q.empty() && !q.full());
        q.task_done().unwrap();
        q.task_done().unwrap();
        q.join().await;
    })
    .unwrap();
}

#[test]
fn transports_and_protocols() {
    let lp = EventLoop::new().unwrap();
    lp.run_until_complete(async {
        let server = lp.create_server(|| Echo { t: None }, "127.0.0.1:0").await?;
        let addr = server.local_addr()?;
        let (transport, proto) = lp.create_connection(Collect::default, addr).await?;
        transport.write(b"..");
        assert!(!transport.is_closing());
        transport.pause_reading();
        transport.resume_reading();
        // Written at once on the selector loop; on a proactor that sends through
        // the ring the bytes count until their send completes, as in asyncio's
        // proactor transports.
        let size = transport.get_write_buffer_size();
        assert!(
            size == 0 || (lp.is_proactor() && size == 2),
            "{size} bytes buffered"
        );
        let (high, low) = (1 << 16, 1 << 14);
        transport.set_write_buffer_limits(high, low).unwrap();
        assert_eq!(transport.peer_addr()?, addr);
        for _ in 0..10_000 {
            if proto.borrow().got.len() == 2 {
                break;
            }
            shardloop::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(proto.borrow().got, b"..", "echoed by the Protocol server");
        assert_eq!(
            transport.get_write_buffer_size(),
            0,
            "sent by the time it came back"
        );
        transport.close();
        assert!(transport.is_closing());
        transport.abort();
        server.close();
        Ok::<(), std::io::Error>(())
    })
    .unwrap()
    .unwrap();
}

#[test]
fn subprocesses_and_name_resolution() {
    let lp = EventLoop::new().unwrap();
    shardloop::set_event_loop(Some(lp.clone()));
    lp.run_until_complete(async {
        let out = shardloop::process::Command::new("sh")
            .arg("-c")
            .arg("echo hi")
            .output()
            .await?;
        assert_eq!(out.stdout, b"hi\n");
        let mut child = shardloop::process::Command::new("cat")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let (stdin, stdout) = (child.stdin.take().unwrap(), child.stdout.take().unwrap()); // futures-io
        drop((stdin, stdout));
        let status: std::process::ExitStatus = child.wait().await?;
        assert!(
            status.success(),
            "cat ends at the end of its input: {status}"
        );
        child.kill()?;
        let addrs: Vec<std::net::SocketAddr> = shardloop::net::lookup_host("localhost:80").await?;
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 80));
        Ok::<(), std::io::Error>(())
    })
    .unwrap()
    .unwrap();
    shardloop::set_event_loop(None);
}
