//! RESP, the Redis wire protocol (RESP2, and RESP3 for clients that ask with
//! `HELLO 3`): requests in, replies out.
//!
//! **A building block of the `kv_server` example.** It does no I/O: the server reads
//! bytes from a socket into a [`Decoder`], takes whole requests out of it, and writes
//! the bytes of [`Reply`] values back. Everything here is plain data and functions, so
//! it is tested (and fuzzed, see `examples/kv_server/fuzz/`) without sockets.
//!
//! Requests come in the two shapes Redis accepts:
//! - multibulk: an array of bulk strings, `*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`, which is
//!   what every client library sends;
//! - inline: one line split on whitespace, `PING\r\n`, with Redis's quoting rules
//!   (`SET k "a b"`), which is what people type into `telnet`.
//!
//! Many requests may arrive in one read (pipelining) and one request may arrive over
//! many reads; the [`Decoder`] handles both. Input is bounded by [`Limits`]: a declared
//! length is checked before anything is allocated for it, and memory is only ever
//! spent on bytes that have actually arrived.
//!
//! A [`ProtocolError`] means the byte stream cannot be trusted any more: the server
//! sends [`ProtocolError::to_resp`] and closes that connection, as Redis does.
//!
//! ```
//! use kv_server::resp::{Decoder, Limits, Reply};
//!
//! let mut decoder = Decoder::new(Limits::default());
//! decoder.extend(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n*1\r\n$4\r\nPI");
//! let get = decoder.next_request()?.unwrap();
//! assert_eq!((get.get(0), get.get(1)), (Some(&b"GET"[..]), Some(&b"k"[..])));
//! assert_eq!(decoder.next_request()?.unwrap().to_vecs(), [b"PING".to_vec()]);
//! assert_eq!(decoder.next_request()?, None); // the rest has not arrived yet
//! decoder.extend(b"NG\r\n");
//! assert_eq!(decoder.next_request()?.unwrap().to_vecs(), [b"PING".to_vec()]);
//!
//! let mut out = Vec::new();
//! Reply::Bulk(b"v".to_vec()).encode(&mut out);
//! Reply::Nil.encode(&mut out);
//! assert_eq!(out, b"$1\r\nv\r\n$-1\r\n");
//! # Ok::<(), kv_server::resp::ProtocolError>(())
//! ```

mod decoder;
mod encode;
mod error;
mod parse;

pub use decoder::Decoder;
pub(crate) use encode::write_decimal;
pub use encode::{
    format_double, write_array_len, write_bulk, write_error, write_integer, write_nil,
    write_nil_array, write_null, write_simple, Protocol, Reply,
};
pub use error::ProtocolError;
pub use parse::{parse_integer, Args, Parsed, Parser};

/// Bounds on what one connection may send, checked before memory is spent on it.
///
/// The defaults are safe for a server on the open network and generous for real
/// clients. A request that breaks a limit is a [`ProtocolError`].
///
/// ```
/// use kv_server::resp::Limits;
/// let small = Limits { max_bulk_len: 1024, ..Limits::default() };
/// assert_eq!(small.max_array_len, Limits::default().max_array_len);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The longest bulk string (one argument) in bytes. Default 64 MiB (Redis's
    /// `proto-max-bulk-len` is 512 MiB; a smaller default keeps one connection from
    /// taking that much memory).
    pub max_bulk_len: usize,
    /// The most elements in one request array. Default 1 Mi (1,048,576).
    pub max_array_len: usize,
    /// The longest inline request line, and the longest `*<n>` / `$<n>` header line,
    /// in bytes. Default 64 KiB, Redis's `PROTO_INLINE_MAX_SIZE`.
    pub max_inline_len: usize,
    /// The most bytes one unfinished request may occupy in the buffer. A request of
    /// this size or more is refused.
    /// Default 128 MiB.
    pub max_buffer: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: 64 << 20,
            max_array_len: 1 << 20,
            max_inline_len: 64 << 10,
            max_buffer: 128 << 20,
        }
    }
}
