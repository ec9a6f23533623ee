//! Replies: the RESP2 values a server sends, and the functions that write them.

use std::borrow::Cow;

/// One RESP2 reply value.
///
/// Owned and `Send`, so a shard can compute it and hand it to the shard that owns the
/// connection. [`encode`](Reply::encode) appends its wire bytes.
///
/// ```
/// use kv_server::resp::Reply;
/// let reply = Reply::Array(vec![Reply::Integer(-3), Reply::Nil, Reply::ok()]);
/// assert_eq!(reply.to_bytes(), b"*3\r\n:-3\r\n$-1\r\n+OK\r\n");
/// assert_eq!(Reply::error("ERR syntax error").to_bytes(), b"-ERR syntax error\r\n");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+<text>\r\n`, e.g. `OK`, `PONG`.
    Simple(Cow<'static, str>),
    /// `-<message>\r\n`; the message starts with its code, e.g. `ERR syntax error`.
    Error(Cow<'static, str>),
    /// `:<n>\r\n`.
    Integer(i64),
    /// `$<len>\r\n<bytes>\r\n`.
    Bulk(Vec<u8>),
    /// The nil bulk string `$-1\r\n` (a missing value).
    Nil,
    /// `*<len>\r\n` and the elements.
    Array(Vec<Reply>),
    /// The nil array `*-1\r\n`.
    NilArray,
}

impl Reply {
    /// `+OK`.
    pub fn ok() -> Reply {
        Reply::Simple(Cow::Borrowed("OK"))
    }

    /// An error reply; `message` starts with its code (`ERR ...`, `WRONGTYPE ...`).
    pub fn error(message: impl Into<Cow<'static, str>>) -> Reply {
        Reply::Error(message.into())
    }

    /// Whether this is an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// Appends the wire bytes of this reply to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Simple(s) => write_simple(out, s),
            Reply::Error(e) => write_error(out, e),
            Reply::Integer(n) => write_integer(out, *n),
            Reply::Bulk(b) => write_bulk(out, b),
            Reply::Nil => write_nil(out),
            Reply::Array(items) => {
                write_array_len(out, items.len());
                for item in items {
                    item.encode(out);
                }
            }
            Reply::NilArray => write_nil_array(out),
        }
    }

    /// The wire bytes of this reply.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// Appends a line's text with `\r` and `\n` turned into spaces, as Redis does for
/// status and error replies: a line break inside would end the reply early.
fn write_line(out: &mut Vec<u8>, prefix: u8, text: &str) {
    out.push(prefix);
    out.extend(
        text.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

/// Appends a simple string, `+<text>\r\n` (line breaks in `text` become spaces).
///
/// ```
/// let mut out = Vec::new();
/// kv_server::resp::write_simple(&mut out, "PONG");
/// assert_eq!(out, b"+PONG\r\n");
/// ```
pub fn write_simple(out: &mut Vec<u8>, text: &str) {
    write_line(out, b'+', text);
}

/// Appends an error, `-<message>\r\n` (line breaks in `message` become spaces).
///
/// ```
/// let mut out = Vec::new();
/// kv_server::resp::write_error(&mut out, "ERR unknown command");
/// assert_eq!(out, b"-ERR unknown command\r\n");
/// ```
pub fn write_error(out: &mut Vec<u8>, message: &str) {
    write_line(out, b'-', message);
}

/// Appends an integer, `:<n>\r\n`.
///
/// ```
/// let mut out = Vec::new();
/// kv_server::resp::write_integer(&mut out, i64::MIN);
/// assert_eq!(out, b":-9223372036854775808\r\n");
/// ```
pub fn write_integer(out: &mut Vec<u8>, n: i64) {
    out.push(b':');
    write_decimal(out, n);
    out.extend_from_slice(b"\r\n");
}

/// Appends a bulk string, `$<len>\r\n<bytes>\r\n`.
///
/// ```
/// let mut out = Vec::new();
/// kv_server::resp::write_bulk(&mut out, b"a\r\nb");
/// assert_eq!(out, b"$4\r\na\r\nb\r\n");
/// ```
pub fn write_bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() + 16);
    out.push(b'$');
    write_decimal(out, bytes.len() as i64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// Appends the nil bulk string, `$-1\r\n`.
///
/// ```
/// let mut out = Vec::new();
/// kv_server::resp::write_nil(&mut out);
/// assert_eq!(out, b"$-1\r\n");
/// ```
pub fn write_nil(out: &mut Vec<u8>) {
    out.extend_from_slice(b"$-1\r\n");
}

/// Appends an array header, `*<len>\r\n`; the caller then appends `len` elements.
///
/// ```
/// use kv_server::resp::{write_array_len, write_bulk};
/// let mut out = Vec::new();
/// write_array_len(&mut out, 1);
/// write_bulk(&mut out, b"x");
/// assert_eq!(out, b"*1\r\n$1\r\nx\r\n");
/// ```
pub fn write_array_len(out: &mut Vec<u8>, len: usize) {
    out.push(b'*');
    write_decimal(out, len as i64);
    out.extend_from_slice(b"\r\n");
}

/// Appends the nil array, `*-1\r\n`.
///
/// ```
/// let mut out = Vec::new();
/// kv_server::resp::write_nil_array(&mut out);
/// assert_eq!(out, b"*-1\r\n");
/// ```
pub fn write_nil_array(out: &mut Vec<u8>) {
    out.extend_from_slice(b"*-1\r\n");
}

/// Appends `n` in decimal without going through `fmt` (replies are a hot path).
pub(crate) fn write_decimal(out: &mut Vec<u8>, n: i64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals() {
        for n in [0, 1, -1, 9, 10, 99, 100, 12345, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            write_decimal(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }

    #[test]
    fn line_breaks_cannot_escape_a_line() {
        assert_eq!(
            Reply::error("ERR a\r\nb").to_bytes(),
            b"-ERR a  b\r\n".to_vec()
        );
        assert_eq!(
            Reply::Simple("x\ny".into()).to_bytes(),
            b"+x y\r\n".to_vec()
        );
    }

    #[test]
    fn nested_arrays_and_nils() {
        let r = Reply::Array(vec![
            Reply::Array(vec![]),
            Reply::NilArray,
            Reply::Bulk(Vec::new()),
        ]);
        assert_eq!(r.to_bytes(), b"*3\r\n*0\r\n*-1\r\n$0\r\n\r\n".to_vec());
    }
}
