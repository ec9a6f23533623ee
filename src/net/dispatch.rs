//! [`Dispatcher`]: one acceptor hands each connection to the least-loaded loop.
//!
//! `SO_REUSEPORT` lets the kernel spread connections over one listener per shard, but
//! its hashing can be uneven (a few long-lived connections can land on one shard).
//! A dispatcher accepts on one loop and moves each connection to the target loop
//! with the fewest open connections (or round-robin), counting them as they close.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::{TcpListener, TcpStream};
use crate::{LoopHandle, Remote};

/// How a [`Dispatcher`] picks the loop for each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The loop with the fewest open connections (ties: the next in turn).
    LeastLoaded,
    /// Each loop in turn.
    RoundRobin,
}

/// Hands accepted connections to a set of loops (usually a runtime's shards).
///
/// ```
/// use shardloop::net::{Dispatcher, Placement, TcpListener, TcpStream};
/// let rt = shardloop::Runtime::builder().shards(2).build()?;
/// let acceptor = rt.shard(0).clone();
/// let targets = rt.shards().to_vec();
/// let addr = acceptor
///     .submit(move || async move {
///         let listener = TcpListener::bind("127.0.0.1:0").unwrap();
///         let addr = listener.local_addr().unwrap();
///         drop(shardloop::spawn(async move {
///             let d = Dispatcher::new(targets, Placement::LeastLoaded);
///             // Each connection is served on its own shard; here: just closed.
///             let _ = d.run(&listener, |stream: TcpStream| async move { drop(stream) }).await;
///         }));
///         addr
///     })
///     .wait()?;
/// std::net::TcpStream::connect(addr).unwrap();
/// rt.shutdown(std::time::Duration::from_secs(1))?;
/// # Ok::<(), shardloop::Error>(())
/// ```
pub struct Dispatcher {
    targets: Arc<[LoopHandle]>,
    open: Arc<[AtomicUsize]>,
    placement: Placement,
    next: Cell<usize>,
}

impl Dispatcher {
    /// A dispatcher over `targets`.
    ///
    /// # Panics
    /// If `targets` is empty.
    pub fn new(targets: Vec<LoopHandle>, placement: Placement) -> Self {
        assert!(
            !targets.is_empty(),
            "a Dispatcher needs at least one target loop"
        );
        let open = targets.iter().map(|_| AtomicUsize::new(0)).collect();
        Dispatcher {
            targets: targets.into(),
            open,
            placement,
            next: Cell::new(0),
        }
    }

    /// Open connections per target, in target order.
    pub fn open_connections(&self) -> Vec<usize> {
        self.open
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect()
    }

    /// The target the next connection goes to.
    fn pick(&self) -> usize {
        let n = self.targets.len();
        let start = self.next.get();
        self.next.set((start + 1) % n);
        match self.placement {
            Placement::RoundRobin => start,
            Placement::LeastLoaded => (0..n)
                .map(|k| (start + k) % n)
                .min_by_key(|&i| self.open[i].load(Ordering::Relaxed))
                .unwrap_or(start),
        }
    }

    /// Moves `stream` to the picked loop and runs `serve(stream)` there as a task.
    /// Returns the target's index and the task's result.
    pub fn dispatch<F, Fut>(&self, stream: TcpStream, serve: Arc<F>) -> (usize, Remote<()>)
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let target = self.pick();
        self.open[target].fetch_add(1, Ordering::Relaxed);
        let open = OpenGuard {
            open: self.open.clone(),
            index: target,
        };
        let std_stream = stream.into_std();
        let remote = self.targets[target].submit(move || async move {
            let _open = open;
            match TcpStream::from_std(std_stream) {
                Ok(stream) => serve(stream).await,
                Err(e) => log::warn!("a dispatched connection could not join its loop: {e}"),
            }
        });
        (target, remote)
    }

    /// Accepts connections on `listener` (on the current loop) and dispatches each,
    /// until accepting fails for good. Running out of file descriptors is not such a
    /// failure: `accept` backs off and retries.
    pub async fn run<F, Fut>(&self, listener: &TcpListener, serve: F) -> io::Result<()>
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let serve = Arc::new(serve);
        loop {
            let (stream, _) = listener.accept().await?;
            let (_, remote) = self.dispatch(stream, serve.clone());
            // Detached: the connection lives on its own loop from here on.
            drop(remote);
        }
    }
}

impl fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dispatcher")
            .field("placement", &self.placement)
            .field("open", &self.open_connections())
            .finish()
    }
}

/// Counts a connection open until its task ends (or is dropped unrun).
struct OpenGuard {
    open: Arc<[AtomicUsize]>,
    index: usize,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.open[self.index].fetch_sub(1, Ordering::Relaxed);
    }
}
