//! asyncio's transports and protocols: callback networking with no futures on the
//! data path.
//!
//! A [`Protocol`] is an object whose methods the loop calls: `connection_made` first,
//! then `data_received` for each chunk read, `eof_received` when the peer shuts its
//! side down, and `connection_lost` exactly once, last. It talks back through its
//! [`Transport`], a cheap `Clone` handle whose `write` sends at once when it can and
//! buffers the rest. Read readiness goes from the reactor straight to a ready-queue
//! entry that reads the socket into a reused buffer and calls `data_received`: no
//! task, no waker, no future. On a proactor loop (Linux 5.19 and later) the ring
//! does a stream transport's I/O instead: a completed receive hands its bytes to
//! `data_received`, and writes go out as ring sends with the loop's next batch
//! (they count in `get_write_buffer_size` until they complete).
//!
//! Servers come from [`EventLoop::create_server`](crate::EventLoop::create_server)
//! (one protocol per accepted connection, made by a factory), clients from
//! [`EventLoop::create_connection`](crate::EventLoop::create_connection); both have
//! Unix-domain variants. [`DatagramProtocol`] and [`DatagramTransport`] are the UDP
//! pair, from [`EventLoop::create_datagram_endpoint`](crate::EventLoop::create_datagram_endpoint).
//!
//! ```
//! use shardloop::{Protocol, Transport};
//!
//! struct Echo { t: Option<Transport> }
//! impl Protocol for Echo {
//!     fn connection_made(&mut self, t: Transport) { self.t = Some(t) }
//!     fn data_received(&mut self, data: &[u8]) { self.t.as_ref().unwrap().write(data) }
//! }
//!
//! #[derive(Default)]
//! struct Client { t: Option<Transport>, got: Vec<u8> }
//! impl Protocol for Client {
//!     fn connection_made(&mut self, t: Transport) {
//!         t.write(b"hello");
//!         self.t = Some(t);
//!     }
//!     fn data_received(&mut self, data: &[u8]) {
//!         self.got.extend_from_slice(data);
//!         if self.got.len() == 5 {
//!             self.t.as_ref().unwrap().close();
//!         }
//!     }
//!     fn connection_lost(&mut self, _err: Option<std::io::Error>) {
//!         shardloop::get_running_loop().unwrap().stop();
//!     }
//! }
//!
//! let lp = shardloop::new_event_loop()?;
//! let server = lp.run_until_complete(lp.create_server(|| Echo { t: None }, "127.0.0.1:0"))??;
//! let addr = server.local_addr()?;
//! let (_transport, client) =
//!     lp.run_until_complete(lp.create_connection(Client::default, addr))??;
//! lp.run_forever()?; // until the client's connection_lost stops it
//! assert_eq!(client.borrow().got, b"hello");
//! server.close();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The rules, asyncio's
//! - `connection_made` is called first, `connection_lost` exactly once and last
//!   (through `call_soon`, after the transport has stopped reading and, for a
//!   `close`, flushed its buffer); the socket is closed after it returns, and the
//!   transport drops its protocol then (which breaks the protocol -> transport ->
//!   protocol cycle).
//! - `eof_received` returning `false` closes the transport; `true` leaves it
//!   half-open, for writing.
//! - `pause_writing` is called when the write buffer grows over the high-water mark
//!   (64 KiB by default), `resume_writing` when it drains to the low-water mark
//!   (16 KiB). When a write made from inside the protocol's own method crosses the
//!   mark, the call comes right after that method returns (the protocol is borrowed
//!   while it runs).
//! - A protocol method that panics (any of them, `pause_writing` and
//!   `resume_writing` too) is caught: the loop's exception handler gets a context
//!   ("fatal error: protocol.data_received() call failed", with the panic message),
//!   and the transport is aborted, so `connection_lost` gets an error saying what
//!   panicked. A panic in `connection_lost` itself is only reported. Other
//!   connections, and the server, go on.
//! - OS errors (a reset, a broken pipe) abort the transport and reach the protocol
//!   as `connection_lost(Some(err))`; they are logged at debug level only, as in
//!   asyncio.
//! - Closing the loop closes every transport still open: its `connection_lost` is
//!   called then, during `close()`, with an error saying the loop is closed (or with
//!   what it was due to get, if it was closing already).
//! - A transport's protocol is held as `Rc<RefCell<P>>` (the handle
//!   `create_connection` gives back): do not keep it borrowed across an `.await`,
//!   or a callback that comes meanwhile finds it borrowed, which is reported and
//!   closes the connection like a panic.
//! - A transport reads at most 16 times (up to 64 KiB each) per turn, then waits
//!   for its next turn at the back of the ready queue, so a peer that keeps the
//!   socket full cannot starve callbacks, timers or other connections.

mod connect;
mod datagram;
mod endpoint;
mod server;
mod stream;

use std::io;
use std::net::SocketAddr;

pub use datagram::DatagramTransport;
pub use server::Server;
pub use stream::Transport;

/// asyncio's `Protocol`: what a stream connection calls, in this order:
/// `connection_made`, `data_received`*, `eof_received`?, `connection_lost`.
///
/// See the [module docs](crate::protocol) for an echo server and client.
pub trait Protocol: 'static {
    /// The connection is up; `transport` is how the protocol writes and closes. Keep
    /// it (a clone is cheap).
    fn connection_made(&mut self, transport: Transport);

    /// Bytes arrived. They are only borrowed: copy what must outlive the call.
    fn data_received(&mut self, data: &[u8]);

    /// The peer shut its write side down (no more data will come). Return `false`
    /// (the default) to close the transport, `true` to keep it open for writing.
    fn eof_received(&mut self) -> bool {
        false
    }

    /// The connection is closed: `None` after a `close` or `abort` (or an end of
    /// stream that closed it), `Some(err)` when an error ended it. Called exactly
    /// once, last.
    fn connection_lost(&mut self, err: Option<io::Error>) {
        let _ = err;
    }

    /// The transport's write buffer went over its high-water mark: stop writing
    /// until [`resume_writing`](Self::resume_writing).
    fn pause_writing(&mut self) {}

    /// The transport's write buffer drained to its low-water mark.
    fn resume_writing(&mut self) {}
}

/// asyncio's `DatagramProtocol`: what a UDP endpoint calls. `connection_made` first,
/// then `datagram_received` and `error_received` in any order, `connection_lost`
/// exactly once, last.
pub trait DatagramProtocol: 'static {
    /// The endpoint is up; `transport` is how the protocol sends and closes.
    fn connection_made(&mut self, transport: DatagramTransport);

    /// A datagram arrived from `addr`. It is only borrowed.
    fn datagram_received(&mut self, data: &[u8], addr: SocketAddr);

    /// A send or receive failed (an ICMP "port unreachable" on a connected socket
    /// shows up here as `ConnectionRefused`, say). The endpoint stays open.
    fn error_received(&mut self, err: io::Error) {
        let _ = err;
    }

    /// The endpoint is closed (`None` after `close` or `abort`). Called exactly
    /// once, last.
    fn connection_lost(&mut self, err: Option<io::Error>) {
        let _ = err;
    }

    /// The send buffer went over its high-water mark.
    fn pause_writing(&mut self) {}

    /// The send buffer drained to its low-water mark.
    fn resume_writing(&mut self) {}
}
