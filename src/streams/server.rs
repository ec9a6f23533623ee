//! [`Server`]: the accept loop behind [`start_server`](super::start_server), one
//! task per connection running the handler.

use std::any::type_name;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::task::Poll;

use slab::Slab;

use super::socket::sealed::Owner;
use super::socket::StreamSocket;
use super::writer::WriterHandle;
use super::{from_socket, spawn_on, StreamReader, StreamWriter};
use crate::net::{server_closed, ListenAddr, Listening, ServerSocket, TcpStream};
use crate::sync::Event;
use crate::{EventLoop, ExceptionContext};

/// What a connection handler may return: `()`, or a `Result<(), E>` whose error
/// goes to the loop's exception handler ("unhandled error in client_connected_cb",
/// as asyncio reports an exception a handler raised).
pub trait HandlerOutput {
    /// The error to report, if any.
    fn into_error(self) -> Option<String>;
}

impl HandlerOutput for () {
    fn into_error(self) -> Option<String> {
        None
    }
}

impl<E: fmt::Display> HandlerOutput for Result<(), E> {
    fn into_error(self) -> Option<String> {
        self.err().map(|e| e.to_string())
    }
}

/// A stream server (asyncio's `Server`), from
/// [`start_server`](super::start_server) or
/// [`start_unix_server`](super::start_unix_server): it accepts connections in a
/// task of its own and runs the handler for each in a task of its own.
///
/// A handler that panics or returns an error is reported to the loop's exception
/// handler; the server serves on. Dropping the `Server` does not stop it (asyncio's
/// server lives on too): [`close`](Self::close) does, or the loop closing.
///
/// ```
/// use shardloop::streams;
/// shardloop::run(async {
///     let server = streams::start_server("127.0.0.1:0", |mut r, mut w| async move {
///         let line = r.readline().await?;
///         w.write(&line);
///         w.drain().await
///     })
///     .await?;
///     let (mut r, mut w) = streams::open_connection(server.local_addr()).await?;
///     w.write(b"ping\n");
///     assert_eq!(r.readline().await?, b"ping\n");
///     server.close(); // stops accepting; the connection may finish
///     drop((r, w));
///     server.wait_closed().await; // every handler is done
///     assert!(!server.is_serving());
///     Ok::<_, shardloop::Error>(())
/// })??;
/// # Ok::<(), shardloop::Error>(())
/// ```
pub struct Server<S: StreamSocket = TcpStream> {
    inner: Rc<Inner<S>>,
}

struct Inner<S: StreamSocket> {
    /// `None` once closed: the socket is closed at once, and the accept loop,
    /// which only borrows it while it polls, then ends.
    listener: RefCell<Option<S::Listener>>,
    addr: S::Addr,
    /// Handlers still running.
    connections: Cell<usize>,
    /// Their connections' writers (for `close_clients` and `abort_clients`).
    writers: RefCell<Slab<WriterHandle<S>>>,
    /// Set by `close`.
    closed: Event,
    /// Set once closed and every handler is done.
    idle: Event,
}

impl<S: StreamSocket> Server<S> {
    /// Starts the accept loop on this thread's loop.
    pub(super) fn start<F, Fut>(
        listener: S::Listener,
        addr: S::Addr,
        handler: F,
    ) -> Result<Server<S>, crate::Error>
    where
        F: Fn(StreamReader<S>, StreamWriter<S>) -> Fut + 'static,
        Fut: Future + 'static,
        Fut::Output: HandlerOutput,
    {
        let lp = crate::get_event_loop()?;
        let inner = Rc::new(Inner {
            listener: RefCell::new(Some(listener)),
            addr,
            connections: Cell::new(0),
            writers: RefCell::new(Slab::new()),
            closed: Event::new(),
            idle: Event::new(),
        });
        let accepting = accept_loop(inner.clone(), Rc::new(handler));
        spawn_on(&Owner(Rc::downgrade(&lp.inner)), accepting)?;
        Ok(Server { inner })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> S::Addr {
        self.inner.addr.clone()
    }

    /// Stops accepting: the listening socket is closed at once (new connections are
    /// refused). Connections already accepted go on. Idempotent.
    pub fn close(&self) {
        self.inner.close();
    }

    /// Closes every connection whose handler still runs: its writer's
    /// [`close`](StreamWriter::close), so what it buffered is sent, then both
    /// directions are shut down (the handler's reader reads end-of-stream; a handler
    /// that dropped its writer has its socket shut down, so its reader does too).
    /// asyncio 3.13's `close_clients`; call [`close`](Self::close) first, or new
    /// clients may connect meanwhile.
    pub fn close_clients(&self) {
        self.inner.writers().iter().for_each(WriterHandle::close);
    }

    /// Aborts every connection whose handler still runs: what its writer buffered
    /// is dropped and both directions are shut down now; the handler's reader
    /// reads end-of-stream, and its writer's `drain` and `wait_closed` give
    /// `ConnectionAborted`. asyncio 3.13's `abort_clients`.
    pub fn abort_clients(&self) {
        self.inner.writers().iter().for_each(WriterHandle::abort);
    }

    /// Whether it is accepting connections (not closed).
    pub fn is_serving(&self) -> bool {
        self.inner.listener.borrow().is_some()
    }

    /// The sockets it listens on (asyncio's `Server.sockets`): its one listening
    /// socket while it serves, none once it is closed. See [`ServerSocket`].
    pub fn sockets(&self) -> Vec<ServerSocket> {
        match self.is_serving() {
            true => vec![ServerSocket::new(self.inner.clone())],
            false => Vec::new(),
        }
    }

    /// Waits until the server is closed and every handler has finished (asyncio
    /// 3.12's `wait_closed`).
    pub async fn wait_closed(&self) {
        self.inner.idle.wait().await;
    }

    /// Serves until [`close`](Self::close) is called (asyncio's `serve_forever`).
    /// If this future is dropped first (its task cancelled), the server is closed,
    /// as asyncio closes it when `serve_forever` is cancelled.
    pub async fn serve_forever(&self) {
        struct CloseOnDrop<'a, S: StreamSocket>(&'a Inner<S>);
        impl<S: StreamSocket> Drop for CloseOnDrop<'_, S> {
            fn drop(&mut self) {
                self.0.close();
            }
        }
        let _closer = CloseOnDrop(&self.inner);
        self.inner.closed.wait().await;
    }
}

impl<S: StreamSocket> fmt::Debug for Server<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.inner.addr)
            .field("serving", &self.is_serving())
            .field("connections", &self.inner.connections.get())
            .finish()
    }
}

impl<S: StreamSocket> Listening for Inner<S> {
    fn listening_fd(&self) -> Option<RawFd> {
        self.listener.borrow().as_ref().map(S::listener_fd)
    }

    fn listening_addr(&self) -> io::Result<ListenAddr> {
        self.listener.borrow().as_ref().map_or_else(|| Err(server_closed()), S::listener_addr)
    }
}

impl<S: StreamSocket> Inner<S> {
    fn close(&self) {
        let listener = self.listener.borrow_mut().take();
        if listener.is_none() {
            return;
        }
        // Dropping the listener deregisters it, which wakes the accept loop.
        drop(listener);
        self.closed.set();
        self.maybe_idle();
    }

    /// The writers of the running handlers (taken out: closing one must not find
    /// the table borrowed).
    fn writers(&self) -> Vec<WriterHandle<S>> {
        self.writers.borrow().iter().map(|(_, w)| w.clone()).collect()
    }

    fn maybe_idle(&self) {
        if self.connections.get() == 0 && self.closed.is_set() {
            self.idle.set();
        }
    }
}

/// Counts a running handler, and holds its writer's entry; dropped when its task
/// ends, however it ends.
struct ActiveHandler<S: StreamSocket> {
    inner: Rc<Inner<S>>,
    writer: Option<usize>,
}

impl<S: StreamSocket> Drop for ActiveHandler<S> {
    fn drop(&mut self) {
        let inner = &self.inner;
        if let Some(key) = self.writer {
            inner.writers.borrow_mut().remove(key);
        }
        inner.connections.set(inner.connections.get() - 1);
        inner.maybe_idle();
    }
}

async fn accept_loop<S, F, Fut>(inner: Rc<Inner<S>>, handler: Rc<F>)
where
    S: StreamSocket,
    F: Fn(StreamReader<S>, StreamWriter<S>) -> Fut + 'static,
    Fut: Future + 'static,
    Fut::Output: HandlerOutput,
{
    let starved = Cell::new(false);
    let describe = || format!("stream server on {:?}", inner.addr);
    loop {
        let accepted = crate::net::accept_with_backoff(&starved, describe, |cx| {
            match inner.listener.borrow().as_ref() {
                Some(listener) => S::poll_accept(listener, cx),
                None => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
            }
        })
        .await;
        if inner.listener.borrow().is_none() {
            return; // closed
        }
        match accepted {
            Ok(socket) => serve(&inner, &handler, socket),
            Err(e) if e.kind() == io::ErrorKind::Other && is_loop_closed(&e) => return,
            Err(e) => {
                // asyncio logs an accept error and serves on; wait a little first, so
                // that an error that repeats does not spin.
                log::error!("{}: accept failed: {e}", describe());
                crate::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Whether an accept failed because the loop closed (then no accept can work).
fn is_loop_closed(e: &io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<crate::Error>())
        .is_some_and(|inner| matches!(inner, crate::Error::Closed))
}

/// Runs the handler for one connection in a task of its own.
fn serve<S, F, Fut>(inner: &Rc<Inner<S>>, handler: &Rc<F>, socket: S)
where
    S: StreamSocket,
    F: Fn(StreamReader<S>, StreamWriter<S>) -> Fut + 'static,
    Fut: Future + 'static,
    Fut::Output: HandlerOutput,
{
    let owner = socket.owner();
    inner.connections.set(inner.connections.get() + 1);
    let mut active = ActiveHandler {
        inner: inner.clone(),
        writer: None,
    };
    let handler = handler.clone();
    let lp = socket.owner();
    // The handler is called inside the task, so that a panic in the call itself
    // ends that task, not the accept loop.
    let spawned = spawn_on(&owner, async move {
        let (reader, writer) = from_socket(socket);
        active.writer = Some(active.inner.writers.borrow_mut().insert(writer.handle()));
        let _active = active;
        if let Some(error) = handler(reader, writer).await.into_error() {
            report(&lp, type_name::<F>(), &error);
        }
    });
    if let Err(e) = spawned {
        log::error!("stream server on {:?}: cannot start a handler: {e}", inner.addr);
    }
}

/// Tells the loop's exception handler that a handler returned `error`.
fn report(lp: &Owner, handler: &'static str, error: &str) {
    if let Some(inner) = lp.0.upgrade() {
        let lp = EventLoop { inner };
        lp.call_exception_handler(&ExceptionContext {
            message: format!("unhandled error in client_connected_cb: {error}"),
            panic: None,
            callback: Some(handler),
            loop_name: lp.name().to_string(),
        });
    }
}
