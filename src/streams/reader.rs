//! [`StreamReader`]: asyncio's `StreamReader`, over the read side of a socket.
//!
//! asyncio's transport pushes what it reads into the reader's buffer and pauses
//! reading once the buffer holds twice the limit. Here the reader pulls: it reads
//! from the socket only when a call needs more than is buffered, so unread data
//! waits in the kernel (which applies TCP's flow control) and the buffer never
//! holds much more than the limit, or than what a call asked for.

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::task::Poll;

use super::socket::StreamSocket;
use super::{Connection, DEFAULT_LIMIT};
use crate::net::TcpStream;
use crate::Error;

/// The least room the reader makes in its buffer before a read from the socket.
const MIN_READ: usize = 8 * 1024;
/// The most room it makes for one read: a call that asks for more (`readexactly`
/// of a length the peer sent) gets its buffer as the data arrives, not up front.
const MAX_READ: usize = 256 * 1024;
/// An emptied buffer larger than this gives its memory back.
const KEEP_AT_MOST: usize = 1024 * 1024;

/// The read side of a stream (asyncio's `StreamReader`), from
/// [`open_connection`](super::open_connection), a server's handler, or
/// [`from_socket`](super::from_socket).
///
/// It keeps a buffer: [`readline`](Self::readline) and
/// [`readuntil`](Self::readuntil) look for their separator in what is buffered and
/// read from the socket only when it is not there yet. Their `limit` (default
/// [`DEFAULT_LIMIT`], 64 KiB) bounds how far they search, so a peer that never
/// sends the separator costs about `limit` bytes of memory, not more.
///
/// Every read is cancel-safe: a call dropped while it waits (a timeout) loses
/// nothing, since what it had read stays in the buffer for the next call.
///
/// The reader and the [`StreamWriter`](super::StreamWriter) of a connection are
/// independent: one task may read while another writes.
///
/// ```
/// use shardloop::streams;
/// shardloop::run(async {
///     let server = streams::start_server("127.0.0.1:0", |_r, mut w| async move {
///         w.write(b"line one\nline two\npartial");
///         w.close();
///     })
///     .await?;
///     let (mut r, _w) = streams::open_connection(server.local_addr()).await?;
///     assert_eq!(r.readline().await?, b"line one\n");
///     assert_eq!(r.readuntil(b"two\n").await?, b"line two\n");
///     assert_eq!(r.readline().await?, b"partial"); // the end: no newline
///     assert_eq!(r.readline().await?, b"");
///     assert!(r.at_eof());
///     Ok::<_, shardloop::Error>(())
/// })??;
/// # Ok::<(), shardloop::Error>(())
/// ```
pub struct StreamReader<S: StreamSocket = TcpStream> {
    conn: Rc<Connection<S>>,
    buf: ReadBuffer,
    /// A read from the socket returned end-of-stream (sticky, as asyncio's
    /// `feed_eof`).
    eof: bool,
    limit: usize,
}

impl<S: StreamSocket> StreamReader<S> {
    pub(super) fn new(conn: Rc<Connection<S>>) -> Self {
        StreamReader {
            conn,
            buf: ReadBuffer::default(),
            eof: false,
            limit: DEFAULT_LIMIT,
        }
    }

    /// The limit of [`readline`](Self::readline) and [`readuntil`](Self::readuntil).
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Sets the limit of [`readline`](Self::readline) and
    /// [`readuntil`](Self::readuntil) (asyncio's `limit` argument); zero is refused
    /// with an `InvalidInput` error.
    pub fn set_limit(&mut self, limit: usize) -> Result<(), Error> {
        if limit == 0 {
            return Err(invalid_input("limit cannot be <= 0"));
        }
        self.limit = limit;
        Ok(())
    }

    /// Whether the stream has ended and everything buffered was read. The end is
    /// known once a read met it (as asyncio's `at_eof` knows once the transport
    /// reported it), or once this connection's writer closed it.
    pub fn at_eof(&self) -> bool {
        (self.eof || self.conn.closed.get()) && self.buf.is_empty()
    }

    /// Up to `n` bytes: what is buffered, or else what the next read from the
    /// socket brings. Empty at the end of the stream, and at once for `n == 0`.
    pub async fn read(&mut self, n: usize) -> Result<Vec<u8>, Error> {
        if n == 0 {
            return Ok(Vec::new());
        }
        if self.buf.is_empty() && !self.eof {
            self.fill(n).await?;
        }
        let len = n.min(self.buf.len());
        Ok(self.buf.take(len))
    }

    /// Everything until the end of the stream (asyncio's `read(-1)`). Its size is
    /// what the peer sends: use it on peers you trust, or under a timeout.
    pub async fn read_to_eof(&mut self) -> Result<Vec<u8>, Error> {
        while !self.eof {
            self.fill(MAX_READ).await?;
        }
        let len = self.buf.len();
        Ok(self.buf.take(len))
    }

    /// Exactly `n` bytes. If the stream ends first, the error is
    /// `Error::IncompleteRead { partial, expected: Some(n) }` with the bytes that
    /// came (they leave the buffer). Not bounded by the limit.
    pub async fn readexactly(&mut self, n: usize) -> Result<Vec<u8>, Error> {
        while self.buf.len() < n {
            if self.eof {
                return Err(Error::IncompleteRead {
                    partial: self.buf.take(self.buf.len()),
                    expected: Some(n),
                });
            }
            self.fill(n - self.buf.len()).await?;
        }
        Ok(self.buf.take(n))
    }

    /// Data up to and including `separator` (asyncio's `readuntil`).
    ///
    /// - The stream ends first: `Error::IncompleteRead { partial, expected: None }`,
    ///   `partial` being everything that was buffered (the buffer is emptied).
    /// - The data before the separator is longer than the limit, or the search
    ///   passed the limit without finding it (in what is buffered and what has
    ///   arrived by then): `Error::LimitOverrun`, and the data stays in the buffer,
    ///   for a `read` or a `readexactly` to take.
    /// - An empty separator: an `InvalidInput` error.
    pub async fn readuntil(&mut self, separator: &[u8]) -> Result<Vec<u8>, Error> {
        if separator.is_empty() {
            return Err(invalid_input("separator should be at least one-byte string"));
        }
        // Bytes before `offset` are known not to start the separator.
        let mut offset = 0;
        let mut looked_again = false;
        let at = loop {
            let buffered = self.buf.filled();
            if buffered.len() - offset >= separator.len() {
                if let Some(i) = find(&buffered[offset..], separator) {
                    break offset + i;
                }
                offset = buffered.len() + 1 - separator.len();
                if offset > self.limit {
                    // asyncio's buffer would hold what has arrived by now: look at
                    // that once (a bounded read), then give up.
                    if !looked_again && self.fill_if_ready().await? {
                        looked_again = true;
                        continue;
                    }
                    return Err(Error::LimitOverrun {
                        consumed: offset,
                        separator_found: false,
                    });
                }
            }
            // What the last read brought may complete the separator even at the
            // end of the stream, so the end is looked at after the search.
            if self.eof {
                return Err(Error::IncompleteRead {
                    partial: self.buf.take(self.buf.len()),
                    expected: None,
                });
            }
            self.fill(MIN_READ).await?;
        };
        if at > self.limit {
            return Err(Error::LimitOverrun {
                consumed: at,
                separator_found: true,
            });
        }
        Ok(self.buf.take(at + separator.len()))
    }

    /// A line: data up to and including `b"\n"`; at the end of the stream, what is
    /// left without one, then empty.
    ///
    /// A line longer than the limit is `Err(Error::LimitOverrun { .. })`, and, as in
    /// asyncio, it is thrown away: when its newline was found, the line and the
    /// newline leave the buffer; when it was not, the whole buffer is emptied, and
    /// the rest of that line, still to come, is what the next `readline` returns.
    pub async fn readline(&mut self) -> Result<Vec<u8>, Error> {
        match self.readuntil(b"\n").await {
            Err(Error::IncompleteRead { partial, .. }) => Ok(partial),
            Err(overrun @ Error::LimitOverrun { consumed, .. }) => {
                if self.buf.filled().get(consumed) == Some(&b'\n') {
                    self.buf.take(consumed + 1);
                } else {
                    let len = self.buf.len();
                    self.buf.take(len);
                }
                Err(overrun)
            }
            other => other,
        }
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<S::Addr> {
        self.conn.socket.peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<S::Addr> {
        self.conn.socket.local_addr()
    }

    /// The socket (asyncio's `get_extra_info('socket')`), for its options. Reading
    /// from it directly would bypass the buffer.
    pub fn get_ref(&self) -> &S {
        &self.conn.socket
    }

    /// A read from the socket into the buffer if data (or the end) is there now,
    /// without waiting; whether there was.
    async fn fill_if_ready(&mut self) -> Result<bool, Error> {
        if self.eof || self.conn.closed.get() {
            return Ok(false);
        }
        let socket = &self.conn.socket;
        let room = self.buf.room(MIN_READ);
        match poll_fn(|cx| Poll::Ready(socket.poll_read(cx, room))).await {
            Poll::Ready(n) => {
                self.commit(n?);
                Ok(true)
            }
            Poll::Pending => Ok(false),
        }
    }

    /// `n` bytes were read into the buffer; none is the end of the stream.
    fn commit(&mut self, n: usize) {
        self.buf.commit(n);
        if n == 0 {
            self.eof = true;
        }
    }

    /// One read from the socket into the buffer, with room for at least `want`
    /// bytes (within `MIN_READ..=MAX_READ`). Meeting the end of the stream, or a
    /// socket the writer closed, sets `eof`.
    async fn fill(&mut self, want: usize) -> Result<(), Error> {
        if self.conn.closed.get() {
            self.eof = true;
            return Ok(());
        }
        let socket = &self.conn.socket;
        let room = self.buf.room(want.clamp(MIN_READ, MAX_READ));
        let n = poll_fn(|cx| socket.poll_read(cx, room)).await?;
        self.commit(n);
        Ok(())
    }
}

impl<S: StreamSocket> fmt::Debug for StreamReader<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamReader")
            .field("buffered", &self.buf.len())
            .field("eof", &self.eof)
            .field("limit", &self.limit)
            .finish()
    }
}

fn invalid_input(msg: &'static str) -> Error {
    Error::Io(io::Error::new(io::ErrorKind::InvalidInput, msg))
}

/// Where `needle` (not empty) first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    match needle {
        [byte] => haystack.iter().position(|b| b == byte),
        _ => haystack.windows(needle.len()).position(|w| w == needle),
    }
}

/// The bytes read and not yet taken: `data[start..end]`. `data` stays initialized
/// (zeroed once as it grows), so the socket reads into it without `unsafe`.
#[derive(Default)]
struct ReadBuffer {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuffer {
    fn filled(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    fn len(&self) -> usize {
        self.end - self.start
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Takes the first `n` buffered bytes (`n <= len`).
    fn take(&mut self, n: usize) -> Vec<u8> {
        let taken = self.data[self.start..self.start + n].to_vec();
        self.start += n;
        if self.is_empty() {
            self.start = 0;
            self.end = 0;
            if self.data.len() > KEEP_AT_MOST {
                self.data = Vec::new();
            }
        }
        taken
    }

    /// Free space after the buffered bytes, at least `min` long: the bytes are
    /// moved to the front, and the storage grown, when there is less.
    fn room(&mut self, min: usize) -> &mut [u8] {
        if self.data.len() - self.end < min {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.data.len() - self.end < min {
                // Use all the capacity the vector has anyway (it grows by doubling).
                let size = (self.end + min).max(self.data.capacity());
                self.data.resize(size, 0);
            }
        }
        &mut self.data[self.end..]
    }

    /// `n` bytes were read into [`room`](Self::room).
    fn commit(&mut self, n: usize) {
        self.end += n;
    }
}
