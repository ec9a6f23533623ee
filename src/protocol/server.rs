//! A listening socket that makes a protocol for each connection it accepts:
//! [`Server`] (asyncio's `Server` of `create_server`).
//!
//! Accepting is on the callback path too: a readable edge queues the listener, and
//! when it runs it accepts up to [`ACCEPTS_PER_TURN`] connections (asyncio's
//! backlog per event), each made a transport with a fresh protocol from the factory.
//!
//! On a proactor loop whose kernel takes multishot accepts, the ring accepts instead
//! (`io/accepts.rs`: one `IORING_OP_ACCEPT` for the listener's life, no `accept4` of
//! ours): a task of the server's takes the connections it queued, with the same
//! factory, per-turn bound and back-off.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::{Rc, Weak};
use std::task::{Poll, Waker};

use mio::event::Source;
use mio::{Interest, Registry, Token};
use slab::Slab;

use super::stream::{Conn, Stream, Transport};
use super::Protocol;
use crate::error::panic_message;
use crate::event_loop::ready::{Ready, Runnable};
use crate::event_loop::LoopInner;
use crate::io::reactor::{Readiness, ReadyQueue, Sink};
use crate::io::registration::Registered;
use crate::net::{
    connection_gone, out_of_resources, server_closed, ListenAddr, Listening, ServerSocket, ACCEPT_BACKOFF,
};
use crate::sync::Event;
use crate::task::raw::drop_payload;
use crate::{EventLoop, Task};

/// Connections accepted per turn before the listener yields to the loop.
const ACCEPTS_PER_TURN: usize = 100;

/// Makes the protocol of one accepted connection.
pub(super) type Factory = Box<dyn FnMut() -> Rc<RefCell<dyn Protocol>>>;

/// The listening socket.
pub(super) enum Listen {
    Tcp(mio::net::TcpListener),
    Unix(mio::net::UnixListener),
}

impl Listen {
    fn accept(&self) -> io::Result<(Stream, Option<SocketAddr>)> {
        match self {
            Listen::Tcp(l) => {
                let (s, peer) = l.accept()?;
                Ok((tcp_stream(s), Some(peer)))
            }
            Listen::Unix(l) => Ok((Stream::Unix(l.accept()?.0), None)),
        }
    }

    /// A connection the ring accepted (non-blocking and close-on-exec already), with
    /// its peer's address for a TCP one (the ring does not give it: one
    /// `getpeername`).
    fn adopt(&self, fd: OwnedFd) -> io::Result<(Stream, Option<SocketAddr>)> {
        match self {
            Listen::Tcp(_) => {
                let s = mio::net::TcpStream::from_std(std::net::TcpStream::from(fd));
                let peer = s.peer_addr()?;
                Ok((tcp_stream(s), Some(peer)))
            }
            Listen::Unix(_) => {
                let s = std::os::unix::net::UnixStream::from(fd);
                Ok((Stream::Unix(mio::net::UnixStream::from_std(s)), None))
            }
        }
    }
}

/// An accepted TCP connection, made a transport's stream.
fn tcp_stream(s: mio::net::TcpStream) -> Stream {
    // asyncio sets TCP_NODELAY on every TCP transport.
    if let Err(e) = s.set_nodelay(true) {
        log::debug!("setting TCP_NODELAY on an accepted connection failed: {e}");
    }
    Stream::Tcp(s)
}

/// A listening socket is registered like any mio source (for the ring's accepts).
impl Source for Listen {
    fn register(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            Listen::Tcp(l) => l.register(registry, token, interests),
            Listen::Unix(l) => l.register(registry, token, interests),
        }
    }

    fn reregister(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            Listen::Tcp(l) => l.reregister(registry, token, interests),
            Listen::Unix(l) => l.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Listen::Tcp(l) => l.deregister(registry),
            Listen::Unix(l) => l.deregister(registry),
        }
    }
}

/// The listening socket, as the loop serves it.
enum Socket {
    /// Readiness: the reactor queues the listener, which accepts (`accept_ready`).
    Readiness(Listen),
    /// The ring accepts; the server's accept task takes what it queued.
    Ring(Registered<Listen>),
}

impl Socket {
    fn listen(&self) -> &Listen {
        match self {
            Socket::Readiness(l) => l,
            Socket::Ring(r) => r.get_ref(),
        }
    }
}

impl AsRawFd for Listen {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Listen::Tcp(l) => l.as_raw_fd(),
            Listen::Unix(l) => l.as_raw_fd(),
        }
    }
}

/// The listener's state; the reactor and the [`Server`] share it.
pub(super) struct Listener {
    lp: Weak<LoopInner>,
    me: Weak<Listener>,
    /// None once closed.
    socket: RefCell<Option<Socket>>,
    /// The readiness registration's token (none for ring accepts).
    token: Cell<Option<Token>>,
    /// The task that takes the ring's accepts, while it waits for one (ring accepts
    /// only): `close` wakes it, and it ends.
    accept_waker: Cell<Option<Waker>>,
    factory: RefCell<Option<Factory>>,
    /// The protocol's type name, for reports and logs.
    name: &'static str,
    local: Option<SocketAddr>,
    readable: Cell<bool>,
    queued: Cell<bool>,
    /// Waiting out an accept failure (out of descriptors, say) before trying again.
    backing_off: Cell<bool>,
    /// Connections accepted whose `connection_lost` is not delivered yet (for
    /// `close_clients` and `abort_clients`; weak: a connection's life is its own).
    clients: RefCell<Slab<Weak<Conn>>>,
    /// Set by `close`.
    closed: Event,
    /// Set once closed and every connection is lost.
    idle: Event,
}

/// Counts one accepted connection for its server; dropped when the connection's
/// `connection_lost` has been delivered.
pub(super) struct Accepted {
    server: Rc<Listener>,
    /// Its entry in the server's `clients`.
    key: usize,
}

impl Drop for Accepted {
    fn drop(&mut self) {
        let l = &self.server;
        l.clients.borrow_mut().remove(self.key);
        l.maybe_idle();
    }
}

impl Listener {
    /// Registers `socket` with `lp`; it serves from the next iteration on.
    pub(super) fn start(
        lp: &EventLoop,
        socket: Listen,
        factory: Factory,
        name: &'static str,
    ) -> io::Result<Server> {
        let fd = socket.as_raw_fd();
        let local = match &socket {
            Listen::Tcp(l) => l.local_addr().ok(),
            Listen::Unix(_) => None,
        };
        let by_ring = lp.inner.reactor.ring().is_some_and(|ring| ring.accepts_by_ring());
        let socket = match by_ring {
            true => Socket::Ring(Registered::listener_on(lp, socket)?),
            false => Socket::Readiness(socket),
        };
        let listener = Rc::new_cyclic(|me| Listener {
            lp: Rc::downgrade(&lp.inner),
            me: me.clone(),
            socket: RefCell::new(Some(socket)),
            token: Cell::new(None),
            accept_waker: Cell::new(None),
            factory: RefCell::new(Some(factory)),
            name,
            local,
            readable: Cell::new(false),
            queued: Cell::new(false),
            backing_off: Cell::new(false),
            clients: RefCell::new(Slab::new()),
            closed: Event::new(),
            idle: Event::new(),
        });
        if by_ring {
            let task: Task<()> = lp.create_task(accept_by_ring(listener.clone()))?;
            task.detach();
        } else {
            let token = lp
                .inner
                .reactor
                .register_sink(fd, Some(Interest::READABLE), listener.clone())?;
            listener.token.set(Some(token));
        }
        Ok(Server { listener })
    }

    fn event_loop(&self) -> Option<EventLoop> {
        self.lp.upgrade().map(|inner| EventLoop { inner })
    }

    fn accept_ready(&self, lp: &EventLoop) {
        for _ in 0..ACCEPTS_PER_TURN {
            let accepted = match self.socket.borrow().as_ref() {
                Some(s) => s.listen().accept(),
                None => return,
            };
            match accepted {
                Ok((stream, peer)) => self.serve(lp, stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable.set(false);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted || connection_gone(&e) => {}
                Err(e) => return self.back_off(lp, e),
            }
        }
        self.requeue(lp);
    }

    /// Makes the connection's protocol and transport. A factory that panics loses
    /// this connection only (reported to the exception handler).
    fn serve(&self, lp: &EventLoop, stream: Stream, peer: Option<SocketAddr>) {
        let Some(server) = self.me.upgrade() else {
            return;
        };
        // Counted from before the factory runs: it, or `connection_made`, may close
        // the server (or its clients), and `wait_closed` must wait for (and
        // `close_clients` find) this connection. Dropped unattached, it uncounts.
        let key = self.clients.borrow_mut().insert(Weak::new());
        let counted = Accepted { server, key };
        let made = {
            let mut factory = self.factory.borrow_mut();
            let Some(factory) = factory.as_mut() else {
                return;
            };
            catch_unwind(AssertUnwindSafe(factory))
        };
        // The factory may have closed the server; its drop waited for it to return.
        if self.closed.is_set() {
            self.drop_factory();
        }
        let attach = |t: &Transport| {
            self.clients.borrow_mut()[key] = t.downgrade();
            t.count_for(counted);
        };
        match made {
            Ok(protocol) => {
                if let Err(e) = Conn::start(lp, stream, peer, protocol, self.name, attach) {
                    log::error!("{}: cannot serve an accepted connection: {e}", self.describe());
                }
            }
            Err(payload) => {
                lp.inner
                    .report_panic("protocol factory", self.name, panic_message(&*payload));
                drop_payload(payload);
            }
        }
    }

    /// asyncio's answer to a failing accept: stop accepting for a while (the
    /// connections wait in the backlog), then go on.
    fn back_off(&self, lp: &EventLoop, err: io::Error) {
        self.report_accept_failure(&err);
        let Some(me) = self.me.upgrade() else {
            return;
        };
        self.backing_off.set(true);
        let again = lp.clone();
        let retry = lp.call_later(ACCEPT_BACKOFF, move || {
            me.backing_off.set(false);
            me.requeue(&again);
        });
        if retry.is_err() {
            self.backing_off.set(false);
        }
    }

    fn report_accept_failure(&self, err: &io::Error) {
        if out_of_resources(err) {
            log::warn!(
                "{}: accept failed: {err}; trying again in {} ms",
                self.describe(),
                ACCEPT_BACKOFF.as_millis()
            );
        } else {
            log::error!("{}: accept failed: {err}", self.describe());
        }
    }

    fn requeue(&self, lp: &EventLoop) {
        if self.socket.borrow().is_none() || self.queued.get() {
            return;
        }
        if let Some(me) = self.me.upgrade() {
            self.queued.set(true);
            lp.inner.push_ready_entry(me);
        }
    }

    /// The transports of its connections still open (taken out before any is
    /// closed: closing one runs no protocol code now, but the list must not be
    /// borrowed while transports change).
    fn open_clients(&self) -> Vec<Transport> {
        let clients = self.clients.borrow();
        clients.iter().filter_map(|(_, c)| Transport::upgrade(c)).collect()
    }

    /// Closed, and no connection left: what `wait_closed` waits for.
    fn maybe_idle(&self) {
        if self.clients.borrow().is_empty() && self.closed.is_set() {
            self.idle.set();
        }
    }

    /// Stops listening: the socket is deregistered and closed, the factory dropped.
    fn close(&self) {
        if !self.closed.is_set() {
            self.closed.set();
            self.maybe_idle();
        }
        let socket = self.socket.borrow_mut().take();
        match (socket, self.token.take()) {
            (Some(Socket::Readiness(socket)), Some(token)) => {
                if let Some(lp) = self.lp.upgrade() {
                    lp.reactor.deregister_fd(socket.as_raw_fd(), token);
                }
                drop(socket);
            }
            // Dropping the registration cancels the ring's accept and closes what it
            // queued; the accept task, woken, finds no socket and ends.
            (socket, _) => {
                drop(socket);
                if let Some(waker) = self.accept_waker.take() {
                    waker.wake();
                }
            }
        }
        self.drop_factory();
    }

    /// Drops the factory, unless it is running (it is a caller of `close` then, and
    /// `serve` drops it once it returns).
    fn drop_factory(&self) {
        let factory = match self.factory.try_borrow_mut() {
            Ok(mut factory) => factory.take(),
            Err(_) => return,
        };
        if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(factory))) {
            let msg = panic_message(&*payload);
            drop_payload(payload);
            match self.lp.upgrade() {
                Some(lp) => lp.report_panic("protocol factory destructor", self.name, msg),
                None => log::error!("the protocol factory's destructor panicked: {msg}"),
            }
        }
    }

    fn describe(&self) -> String {
        match self.local {
            Some(a) => format!("server on {a}"),
            None => "unix server".to_string(),
        }
    }
}

/// The accept task of a server whose connections the ring accepts: takes them as
/// they come, [`ACCEPTS_PER_TURN`] per turn of the loop, until the server closes.
fn accept_by_ring(me: Rc<Listener>) -> impl std::future::Future<Output = ()> {
    /// The loop closing drops the task (polled or not yet): the server closes with
    /// it, as a readiness server does when its loop closes (`Sink::on_loop_close`).
    struct CloseOnDrop(Rc<Listener>);
    impl Drop for CloseOnDrop {
        fn drop(&mut self) {
            self.0.accept_waker.take();
            self.0.close();
        }
    }
    let guard = CloseOnDrop(me);
    async move {
        let me = &guard.0;
        accept_all(me).await;
    }
}

async fn accept_all(me: &Rc<Listener>) {
    loop {
        for _ in 0..ACCEPTS_PER_TURN {
            let next = std::future::poll_fn(|cx| match me.socket.borrow().as_ref() {
                Some(Socket::Ring(ring)) => {
                    let next = ring
                        .poll_accept_ring(cx)
                        .expect("a listener registered for ring accepts");
                    if next.is_pending() {
                        me.accept_waker.set(Some(cx.waker().clone()));
                    }
                    next.map(Some)
                }
                _ => Poll::Ready(None),
            })
            .await;
            let (Some(accepted), Some(lp)) = (next, me.event_loop()) else {
                return;
            };
            // The borrow ends before `serve`, which runs the factory and
            // `connection_made` (either may close the server).
            let adopted = accepted.and_then(|fd| match me.socket.borrow().as_ref() {
                Some(socket) => socket.listen().adopt(fd).map_err(crate::net::peer_gone),
                None => Err(io::ErrorKind::NotConnected.into()),
            });
            match adopted {
                Ok((stream, peer)) => me.serve(&lp, stream, peer),
                Err(e) if e.kind() == io::ErrorKind::Interrupted || connection_gone(&e) => {}
                Err(_) if me.socket.borrow().is_none() => return,
                Err(e) => {
                    me.report_accept_failure(&e);
                    crate::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
        crate::yield_now().await;
    }
}

impl Sink for Listener {
    fn on_event(self: Rc<Self>, event: Readiness, ready: &ReadyQueue) {
        if event.readable {
            self.readable.set(true);
        }
        if self.readable.get() && !self.backing_off.get() && !self.queued.replace(true) {
            ready.borrow_mut().push_back(Ready::Entry(self));
        }
    }

    fn on_loop_close(&self) {
        self.close();
    }
}

impl Runnable for Listener {
    fn run(&self, _lp: &LoopInner) {
        self.queued.set(false);
        if self.backing_off.get() || !self.readable.get() {
            return;
        }
        if let Some(lp) = self.event_loop() {
            self.accept_ready(&lp);
        }
    }

    fn cancel(&self) -> bool {
        self.queued.set(false);
        false
    }

    fn is_cancelled(&self) -> bool {
        false
    }

    fn name(&self) -> &'static str {
        "protocol server (accept)"
    }
}

/// A listening server from [`EventLoop::create_server`] or
/// [`EventLoop::create_unix_server`]: each connection it accepts gets a protocol
/// from the factory and a [`Transport`](crate::Transport).
///
/// It serves until [`close`](Self::close) or until its loop closes; dropping the
/// `Server` does not stop it (as in asyncio, where the loop keeps the server).
/// Closing it stops accepting; the connections already made go on.
pub struct Server {
    listener: Rc<Listener>,
}

impl Server {
    /// The address it listens on. `Err(InvalidInput)` for a Unix-domain server
    /// (it listens on the path it was given); `Err(NotConnected)` once closed.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        if !self.is_serving() {
            return Err(io::ErrorKind::NotConnected.into());
        }
        self.listener.local.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "a unix-domain server has no IP address",
            )
        })
    }

    /// Stops listening now: the listening socket is closed, so new connections are
    /// refused; connections already accepted are not touched. Closing twice does
    /// nothing.
    pub fn close(&self) {
        self.listener.close();
    }

    /// Closes every connection it accepted that is still open: each transport's
    /// [`close`](Transport::close), so what it buffered is sent first (asyncio
    /// 3.13's `close_clients`). Call [`close`](Self::close) first, or new clients
    /// may connect meanwhile.
    ///
    /// ```
    /// # use shardloop::{Protocol, Transport};
    /// struct Hold;
    /// impl Protocol for Hold {
    ///     fn connection_made(&mut self, t: Transport) { t.write(b"hi") }
    ///     fn data_received(&mut self, _: &[u8]) {}
    /// }
    /// shardloop::run(async {
    ///     let lp = shardloop::get_event_loop()?;
    ///     let server = lp.create_server(|| Hold, "127.0.0.1:0").await?;
    ///     let mut client = shardloop::net::TcpStream::connect(server.local_addr()?).await?;
    ///     let mut hi = [0u8; 2];
    ///     futures_util::AsyncReadExt::read_exact(&mut client, &mut hi).await?;
    ///     server.close();
    ///     server.close_clients();
    ///     server.wait_closed().await; // every connection is lost now
    ///     let mut rest = Vec::new();
    ///     futures_util::AsyncReadExt::read_to_end(&mut client, &mut rest).await?;
    ///     assert!(rest.is_empty()); // the server side closed
    ///     Ok::<_, Box<dyn std::error::Error>>(())
    /// })??;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close_clients(&self) {
        for t in self.listener.open_clients() {
            t.close();
        }
    }

    /// Aborts every connection it accepted that is still open: each transport's
    /// [`abort`](Transport::abort), dropping what it buffered (asyncio 3.13's
    /// `abort_clients`).
    pub fn abort_clients(&self) {
        for t in self.listener.open_clients() {
            t.abort();
        }
    }

    /// Whether it is still accepting connections.
    pub fn is_serving(&self) -> bool {
        self.listener.socket.borrow().is_some()
    }

    /// The sockets it listens on (asyncio's `Server.sockets`): its one listening
    /// socket while it serves, none once it is closed.
    ///
    /// ```
    /// # use shardloop::{Protocol, Transport};
    /// struct Quiet;
    /// impl Protocol for Quiet {
    ///     fn connection_made(&mut self, _: Transport) {}
    ///     fn data_received(&mut self, _: &[u8]) {}
    /// }
    /// shardloop::run(async {
    ///     let lp = shardloop::get_event_loop()?;
    ///     let server = lp.create_server(|| Quiet, "127.0.0.1:0").await?;
    ///     let sockets = server.sockets();
    ///     assert_eq!(sockets[0].local_addr()?, server.local_addr()?);
    ///     server.close();
    ///     assert!(server.sockets().is_empty());
    ///     Ok::<_, Box<dyn std::error::Error>>(())
    /// })??;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn sockets(&self) -> Vec<ServerSocket> {
        match self.is_serving() {
            true => vec![ServerSocket::new(self.listener.clone())],
            false => Vec::new(),
        }
    }

    /// Waits until the server is closed and every connection it accepted is lost
    /// (its `connection_lost` delivered): asyncio 3.12's `wait_closed`.
    ///
    /// ```
    /// # use shardloop::{Protocol, Transport};
    /// struct Bye;
    /// impl Protocol for Bye {
    ///     fn connection_made(&mut self, t: Transport) { t.write(b"bye"); t.close() }
    ///     fn data_received(&mut self, _: &[u8]) {}
    /// }
    /// shardloop::run(async {
    ///     let lp = shardloop::get_event_loop()?;
    ///     let server = lp.create_server(|| Bye, "127.0.0.1:0").await?;
    ///     let addr = server.local_addr()?;
    ///     let mut client = shardloop::net::TcpStream::connect(addr).await?;
    ///     let mut got = Vec::new();
    ///     futures_util::AsyncReadExt::read_to_end(&mut client, &mut got).await?;
    ///     assert_eq!(got, b"bye");
    ///     server.close();
    ///     server.wait_closed().await;
    ///     Ok::<_, Box<dyn std::error::Error>>(())
    /// })??;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn wait_closed(&self) {
        self.listener.idle.wait().await;
    }

    /// Serves until [`close`](Self::close) is called (asyncio's `serve_forever`);
    /// the server serves from its creation on, so this only waits. If this future
    /// is dropped first (its task cancelled), the server is closed, as asyncio
    /// closes it when `serve_forever` is cancelled.
    pub async fn serve_forever(&self) {
        struct CloseOnDrop<'a>(&'a Listener);
        impl Drop for CloseOnDrop<'_> {
            fn drop(&mut self) {
                self.0.close();
            }
        }
        let _closer = CloseOnDrop(&self.listener);
        self.listener.closed.wait().await;
    }
}

impl Listening for Listener {
    fn listening_fd(&self) -> Option<RawFd> {
        self.socket.borrow().as_ref().map(|s| s.listen().as_raw_fd())
    }

    fn listening_addr(&self) -> io::Result<ListenAddr> {
        match self.socket.borrow().as_ref().map(Socket::listen) {
            Some(Listen::Tcp(l)) => l.local_addr().map(ListenAddr::from),
            Some(Listen::Unix(l)) => l.local_addr().map(ListenAddr::from),
            None => Err(server_closed()),
        }
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("protocol", &self.listener.name)
            .field("local_addr", &self.listener.local)
            .field("serving", &self.is_serving())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::Socket;
    use crate::{EventLoop, Protocol, Transport};

    struct Quiet;
    impl Protocol for Quiet {
        fn connection_made(&mut self, _: Transport) {}
        fn data_received(&mut self, _: &[u8]) {}
    }

    /// The socket a loop's server listens with: whether the ring accepts for it.
    fn accepts_by_ring(lp: &EventLoop) -> bool {
        crate::set_event_loop(Some(lp.clone()));
        let l = lp.clone();
        let server = lp
            .run_until_complete(async move { l.create_server(|| Quiet, "127.0.0.1:0").await })
            .unwrap()
            .unwrap();
        let by_ring = matches!(server.listener.socket.borrow().as_ref(), Some(Socket::Ring(_)));
        server.close();
        crate::set_event_loop(None);
        by_ring
    }

    /// A proactor whose kernel takes multishot accepts serves through the ring; an
    /// epoll loop by readiness.
    #[test]
    fn a_proactor_server_accepts_through_the_ring() {
        assert!(!accepts_by_ring(&EventLoop::builder().proactor(false).build().unwrap()));
        let Some(lp) = crate::io::test_proactor() else {
            return eprintln!("skipped: no io_uring here");
        };
        let multishot = lp.inner.reactor.ring().is_some_and(|r| r.accepts_by_ring());
        assert_eq!(accepts_by_ring(&lp), multishot);
    }
}
