//! Replies: the values a server sends, and the functions that write them in RESP2 or
//! RESP3.

use std::borrow::Cow;

/// The protocol a connection speaks, chosen by the client with `HELLO` (RESP2 until
/// then, as in Redis).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// RESP2: maps and sets are flat arrays, doubles are bulk strings, nulls are
    /// `$-1` / `*-1`.
    #[default]
    Resp2,
    /// RESP3: maps (`%`), sets (`~`), doubles (`,`) and one null (`_`).
    Resp3,
}

/// One reply value, written in either protocol.
///
/// Owned and `Send`, so a shard can compute it and hand it to the shard that owns the
/// connection, which encodes it in the connection's [`Protocol`]
/// ([`encode_as`](Reply::encode_as); [`encode`](Reply::encode) is RESP2).
///
/// ```
/// use kv_server::resp::{Protocol, Reply};
/// let reply = Reply::Array(vec![Reply::Integer(-3), Reply::Nil, Reply::ok()]);
/// assert_eq!(reply.to_bytes(), b"*3\r\n:-3\r\n$-1\r\n+OK\r\n");
/// assert_eq!(Reply::error("ERR syntax error").to_bytes(), b"-ERR syntax error\r\n");
///
/// let map = Reply::Map(vec![(Reply::Bulk(b"f".to_vec()), Reply::Double(1.5))]);
/// let mut resp3 = Vec::new();
/// map.encode_as(&mut resp3, Protocol::Resp3);
/// assert_eq!(resp3, b"%1\r\n$1\r\nf\r\n,1.5\r\n");
/// assert_eq!(map.to_bytes(), b"*2\r\n$1\r\nf\r\n$3\r\n1.5\r\n");
/// ```
#[derive(Clone, Debug, PartialEq)]
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
    /// Key-value pairs: RESP3 `%<n>`, RESP2 an array of `2n` elements.
    Map(Vec<(Reply, Reply)>),
    /// Unordered distinct elements: RESP3 `~<n>`, RESP2 an array.
    Set(Vec<Reply>),
    /// Pairs such as (member, score): RESP3 an array of two-element arrays, RESP2 one
    /// flat array (as Redis answers `ZRANGE .. WITHSCORES`).
    Pairs(Vec<(Reply, Reply)>),
    /// A floating-point number (a score): RESP3 `,<x>`, RESP2 a bulk string, both in
    /// Redis's formatting (`1.5`, `3`, `inf`, `1e+20`).
    Double(f64),
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

    /// Appends the RESP2 wire bytes of this reply to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        self.encode_as(out, Protocol::Resp2);
    }

    /// Appends the wire bytes of this reply in `proto` to `out`.
    pub fn encode_as(&self, out: &mut Vec<u8>, proto: Protocol) {
        let resp3 = proto == Protocol::Resp3;
        match self {
            Reply::Simple(s) => write_simple(out, s),
            Reply::Error(e) => write_error(out, e),
            Reply::Integer(n) => write_integer(out, *n),
            Reply::Bulk(b) => write_bulk(out, b),
            Reply::Nil => write_null(out, proto),
            Reply::NilArray if resp3 => write_null(out, proto),
            Reply::NilArray => write_nil_array(out),
            Reply::Array(items) => {
                write_array_len(out, items.len());
                for item in items {
                    item.encode_as(out, proto);
                }
            }
            Reply::Map(pairs) => {
                if resp3 {
                    write_header(out, b'%', pairs.len());
                } else {
                    write_array_len(out, 2 * pairs.len());
                }
                for (k, v) in pairs {
                    k.encode_as(out, proto);
                    v.encode_as(out, proto);
                }
            }
            Reply::Pairs(pairs) => {
                write_array_len(out, if resp3 { pairs.len() } else { 2 * pairs.len() });
                for (a, b) in pairs {
                    if resp3 {
                        write_array_len(out, 2);
                    }
                    a.encode_as(out, proto);
                    b.encode_as(out, proto);
                }
            }
            Reply::Set(items) => {
                write_header(out, if resp3 { b'~' } else { b'*' }, items.len());
                for item in items {
                    item.encode_as(out, proto);
                }
            }
            Reply::Double(x) if resp3 => {
                out.push(b',');
                out.extend_from_slice(format_double(*x).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Reply::Double(x) => write_bulk(out, format_double(*x).as_bytes()),
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

/// Appends the null of `proto`: `_` in RESP3, the nil bulk string in RESP2.
pub fn write_null(out: &mut Vec<u8>, proto: Protocol) {
    match proto {
        Protocol::Resp2 => write_nil(out),
        Protocol::Resp3 => out.extend_from_slice(b"_\r\n"),
    }
}

/// Appends an aggregate's header, `<kind><len>\r\n`.
fn write_header(out: &mut Vec<u8>, kind: u8, len: usize) {
    out.push(kind);
    write_decimal(out, len as i64);
    out.extend_from_slice(b"\r\n");
}

/// A double as Redis writes it: the shortest text that reads back as the same value,
/// integers without a fraction, `inf` / `-inf`, and an exponent (`1e+20`) for very
/// large or small magnitudes.
///
/// ```
/// use kv_server::resp::format_double;
/// assert_eq!(format_double(3.0), "3");
/// assert_eq!(format_double(-0.25), "-0.25");
/// assert_eq!(format_double(f64::INFINITY), "inf");
/// assert_eq!(format_double(1e20), "1e+20");
/// assert_eq!(format_double(1.5e-7), "1.5e-07");
/// ```
pub fn format_double(x: f64) -> String {
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.to_string();
    }
    let magnitude = x.abs();
    if magnitude != 0.0 && !(1e-5..1e17).contains(&magnitude) {
        // C's %g style: a sign and at least two exponent digits.
        let text = format!("{x:e}");
        let (mantissa, exp) = text.split_once('e').unwrap_or((&text, "0"));
        let (sign, digits) = match exp.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', exp),
        };
        return format!("{mantissa}e{sign}{digits:0>2}");
    }
    format!("{x}")
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
