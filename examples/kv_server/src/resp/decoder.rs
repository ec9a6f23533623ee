//! A connection's read buffer and parser together.

use super::{Args, Limits, Parsed, Parser, ProtocolError};

/// Buffers the bytes a connection receives and hands out its requests in order.
///
/// Read straight into it with [`read_buf`](Decoder::read_buf) and
/// [`commit`](Decoder::commit) (or copy in with [`extend`](Decoder::extend)), then call
/// [`next_request`](Decoder::next_request) until it returns `Ok(None)`; answer each
/// request in order. `read_buf` never offers more room than
/// [`Limits::max_buffer`] allows, so a connection that keeps reading this way holds
/// at most `max_buffer` bytes ([`held`](Decoder::held)); a request that needs more is a
/// [`ProtocolError::TooBigRequest`]. A request's arguments are handed out as slices
/// of the buffer ([`Args`]), valid until the next call.
///
/// ```
/// use kv_server::resp::{Decoder, Limits};
/// let mut decoder = Decoder::new(Limits::default());
/// let incoming = b"PING\r\nECHO hi\r\n";
/// let room = decoder.read_buf(4096);
/// room[..incoming.len()].copy_from_slice(incoming); // a socket read would go here
/// decoder.commit(incoming.len());
/// let mut requests = Vec::new();
/// while let Some(args) = decoder.next_request()? {
///     requests.push(args.to_vecs());
/// }
/// assert_eq!(requests, [vec![b"PING".to_vec()], vec![b"ECHO".to_vec(), b"hi".to_vec()]]);
/// # Ok::<(), kv_server::resp::ProtocolError>(())
/// ```
#[derive(Debug)]
pub struct Decoder {
    parser: Parser,
    /// `buf[start..end]` is received and not yet consumed; `buf[end..]` is spare room
    /// (initialized, so reads can target it without `unsafe`).
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Decoder {
    /// An empty decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Decoder {
            parser: Parser::new(limits),
            buf: Vec::new(),
            start: 0,
            end: 0,
        }
    }

    /// The limits this decoder enforces.
    pub fn limits(&self) -> &Limits {
        self.parser.limits()
    }

    /// What the connection holds: the bytes received and not yet taken out as
    /// requests (an unfinished request's among them). Never above
    /// [`Limits::max_buffer`] when input comes through [`read_buf`](Decoder::read_buf).
    pub fn held(&self) -> usize {
        self.end - self.start
    }

    /// The bytes its buffer takes in memory (what it holds, and room for reads).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Room for the next read: up to `want` bytes, fewer when the buffer limit is near.
    /// Write the received bytes at its front and [`commit`](Decoder::commit) how many.
    ///
    /// The slice is empty only when requests that already arrived were not taken out
    /// with [`next_request`](Decoder::next_request) first.
    pub fn read_buf(&mut self, want: usize) -> &mut [u8] {
        let room = self.limits().max_buffer.saturating_sub(self.held());
        let n = want.min(room);
        self.make_room(n);
        &mut self.buf[self.end..self.end + n]
    }

    /// Marks `n` bytes written into the last [`read_buf`](Decoder::read_buf) as
    /// received.
    ///
    /// # Panics
    /// If `n` is larger than that slice was.
    pub fn commit(&mut self, n: usize) {
        assert!(
            self.end + n <= self.buf.len(),
            "Decoder::commit({n}) beyond the room read_buf gave"
        );
        self.end += n;
    }

    /// Copies `data` in as received. Unlike [`read_buf`](Decoder::read_buf) this does
    /// not stop at the buffer limit; the next [`next_request`](Decoder::next_request)
    /// refuses a request that went over it.
    pub fn extend(&mut self, data: &[u8]) {
        self.make_room(data.len());
        self.buf[self.end..self.end + data.len()].copy_from_slice(data);
        self.end += data.len();
    }

    /// The next complete request's arguments, or `None` when more bytes are needed.
    ///
    /// After an error the connection is to be closed: reply with
    /// [`ProtocolError::to_resp`] and drop the decoder.
    pub fn next_request(&mut self) -> Result<Option<Args<'_>>, ProtocolError> {
        let Parsed { consumed, request } = self.parser.parse(&self.buf[self.start..self.end])?;
        self.start += consumed;
        Ok(request)
    }

    /// Makes `buf[end..end + n]` exist, moving unconsumed bytes to the front first.
    fn make_room(&mut self, n: usize) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        // A big request, or reads that asked for more, should not pin memory for the
        // connection's life: an emptied buffer shrinks to what this read asks for,
        // once it is over twice that (the slack keeps reads of varying sizes from
        // shrinking and regrowing it).
        if self.end == 0 && self.buf.len() > 2 * n {
            self.buf.truncate(n);
            self.buf.shrink_to(n);
        }
        if self.buf.len() < self.end + n {
            self.buf.resize(self.end + n, 0);
        }
    }
}
