//! Why a request stream was refused, worded as Redis words it.

use std::fmt;

/// A request stream that cannot be parsed: the server replies with
/// [`to_resp`](ProtocolError::to_resp) and closes the connection.
///
/// The [`Display`](fmt::Display) text is Redis's message without the `ERR ` prefix,
/// e.g. `Protocol error: invalid bulk length`.
///
/// ```
/// use kv_server::resp::{Limits, Parser, ProtocolError};
/// let err = Parser::new(Limits::default()).parse(b"*1\r\n$-5\r\n").unwrap_err();
/// assert_eq!(err, ProtocolError::InvalidBulkLength);
/// assert_eq!(err.to_resp(), b"-ERR Protocol error: invalid bulk length\r\n");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// `*<n>` with `n` not an integer or above [`Limits::max_array_len`](super::Limits).
    InvalidMultibulkLength,
    /// `$<n>` with `n` negative, not an integer, or above `max_bulk_len`.
    InvalidBulkLength,
    /// An array element that does not start with `$` (the byte found).
    ExpectedBulk(u8),
    /// A `*<n>` header line longer than `max_inline_len`.
    TooBigMultibulkCount,
    /// A `$<n>` header line longer than `max_inline_len`.
    TooBigBulkCount,
    /// An inline request line longer than `max_inline_len`.
    TooBigInline,
    /// An inline request with an unclosed quote, or a closing quote not followed by a
    /// space.
    UnbalancedQuotes,
    /// A header line or a bulk string not followed by `\r\n`.
    ExpectedCrlf,
    /// One request needs `max_buffer` bytes or more.
    TooBigRequest,
}

impl ProtocolError {
    /// The reply to send before closing: `-ERR <message>\r\n`.
    pub fn to_resp(&self) -> Vec<u8> {
        format!("-ERR {self}\r\n").into_bytes()
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Protocol error: ")?;
        match self {
            ProtocolError::InvalidMultibulkLength => f.write_str("invalid multibulk length"),
            ProtocolError::InvalidBulkLength => f.write_str("invalid bulk length"),
            ProtocolError::ExpectedBulk(b) => {
                // Redis prints the raw byte; a control byte could break the reply line,
                // so anything but printable ASCII is written as an escape.
                if b.is_ascii_graphic() || *b == b' ' {
                    write!(f, "expected '$', got '{}'", *b as char)
                } else {
                    write!(f, "expected '$', got '\\x{b:02x}'")
                }
            }
            ProtocolError::TooBigMultibulkCount => f.write_str("too big mbulk count string"),
            ProtocolError::TooBigBulkCount => f.write_str("too big bulk count string"),
            ProtocolError::TooBigInline => f.write_str("too big inline request"),
            ProtocolError::UnbalancedQuotes => f.write_str("unbalanced quotes in request"),
            ProtocolError::ExpectedCrlf => f.write_str("expected '\\r\\n'"),
            ProtocolError::TooBigRequest => f.write_str("request exceeds the query buffer limit"),
        }
    }
}

impl std::error::Error for ProtocolError {}
