//! The incremental request parser: bytes in, argument ranges out.
//!
//! A multibulk request's arguments are handed out as ranges of the bytes they arrived
//! in, so parsing allocates nothing per argument: whoever keeps an argument copies
//! it. The parser consumes nothing of an unfinished request; it remembers how far it
//! got (the array's remaining count, the arguments found so far, a bulk header
//! already read) and resumes there when called again with more bytes appended, so it
//! never looks at a byte twice except while waiting for the end of a line.

use std::fmt;
use std::ops::Range;

use super::{Limits, ProtocolError};

/// What one [`Parser::parse`] call found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed<'a> {
    /// Bytes at the front of the input the parser is done with: empty requests it
    /// skipped, and the complete request if there is one. The caller drops them
    /// before the next call; an unfinished request's bytes are not among them (pass
    /// them again, with more appended).
    pub consumed: usize,
    /// A complete request's arguments (never empty), or `None` when more input is
    /// needed.
    pub request: Option<Args<'a>>,
}

/// A complete request's arguments, borrowed from the bytes they arrived in (or, for
/// an inline request with quotes, from the parser's copy of them unescaped).
///
/// ```
/// use kv_server::resp::{Limits, Parser};
/// let mut parser = Parser::new(Limits::default());
/// let parsed = parser.parse(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")?;
/// let args = parsed.request.unwrap();
/// assert_eq!((args.len(), args.get(1)), (2, Some(&b"k"[..])));
/// assert_eq!(args.to_vecs(), [b"GET".to_vec(), b"k".to_vec()]);
/// # Ok::<(), kv_server::resp::ProtocolError>(())
/// ```
#[derive(Clone, Copy)]
pub struct Args<'a> {
    bytes: &'a [u8],
    ranges: &'a [Range<usize>],
}

impl<'a> Args<'a> {
    /// How many arguments (the command's name counts).
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Whether there are none (never, for a request the parser hands out).
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Argument `i` (0 is the command's name).
    pub fn get(&self, i: usize) -> Option<&'a [u8]> {
        let bytes = self.bytes;
        self.ranges.get(i).map(|r| &bytes[r.clone()])
    }

    /// The arguments in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &'a [u8]> + 'a {
        let bytes = self.bytes;
        self.ranges.iter().map(move |r| &bytes[r.clone()])
    }

    /// The arguments copied out.
    pub fn to_vecs(&self) -> Vec<Vec<u8>> {
        self.iter().map(<[u8]>::to_vec).collect()
    }
}

/// Equal when the arguments are, wherever their bytes are.
impl PartialEq for Args<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Args<'_> {}

impl fmt::Debug for Args<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(String::from_utf8_lossy))
            .finish()
    }
}

/// An incremental RESP2 request parser (multibulk and inline requests).
///
/// Call [`parse`](Parser::parse) with the bytes received and not yet consumed; drop
/// [`Parsed::consumed`] bytes from the front; repeat, with more bytes appended when a
/// call returned no request. [`Decoder`](super::Decoder) does that bookkeeping over its
/// own buffer; use the parser directly when you own the buffer.
///
/// After an error the stream is out of step; the connection is to be closed (or the
/// parser [`reset`](Parser::reset) for a new stream).
///
/// ```
/// use kv_server::resp::{Limits, Parser};
/// let mut parser = Parser::new(Limits::default());
/// let input = b"*1\r\n$4\r\nPING\r\n";
/// // The first 9 bytes: the request is unfinished, nothing is consumed.
/// let first = parser.parse(&input[..9])?;
/// assert_eq!((first.consumed, first.request), (0, None));
/// let second = parser.parse(input)?;
/// assert_eq!(second.consumed, input.len());
/// assert_eq!(second.request.unwrap().to_vecs(), [b"PING".to_vec()]);
/// # Ok::<(), kv_server::resp::ProtocolError>(())
/// ```
#[derive(Debug)]
pub struct Parser {
    limits: Limits,
    /// Elements of the current array still to read; 0 between requests.
    remaining: usize,
    /// Where the arguments of the current request are, counted from its first byte
    /// (or in `inline`, for an inline request).
    args: Vec<Range<usize>>,
    /// Bytes of the unfinished request parsed so far (headers and bulks): where the
    /// next call goes on. 0 between requests.
    scanned: usize,
    /// The length from a `$<n>` header already parsed, whose data has not arrived.
    bulk_len: Option<usize>,
    /// The last inline request's arguments, unescaped.
    inline: Vec<u8>,
}

impl Parser {
    /// A parser enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Parser {
            limits,
            remaining: 0,
            args: Vec::new(),
            scanned: 0,
            bulk_len: None,
            inline: Vec::new(),
        }
    }

    /// The limits this parser enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Forgets any unfinished request, to start a new stream.
    pub fn reset(&mut self) {
        self.remaining = 0;
        self.args = Vec::new();
        self.scanned = 0;
        self.bulk_len = None;
        self.inline = Vec::new();
    }

    /// Parses from the front of `buf` until one request is complete or the input runs
    /// out. Empty requests (`*0`, `*-1`, blank inline lines) are skipped, as Redis does.
    /// While a request is unfinished, `buf` must start with its bytes each call (the
    /// ones not consumed), more appended.
    pub fn parse<'a>(&'a mut self, buf: &'a [u8]) -> Result<Parsed<'a>, ProtocolError> {
        let lim = self.limits;
        // Where the current request starts: after the empty requests skipped here.
        let mut start = 0;
        while self.remaining == 0 {
            let rest = &buf[start..];
            let Some(&first) = rest.first() else {
                return self.incomplete(start, buf.len());
            };
            if first == b'*' {
                let too_big = ProtocolError::TooBigMultibulkCount;
                let Some((count, used)) = header(rest, lim.max_inline_len, too_big)? else {
                    return self.incomplete(start, buf.len());
                };
                let count = count
                    .filter(|&n| n <= 0 || n as u64 <= lim.max_array_len as u64)
                    .ok_or(ProtocolError::InvalidMultibulkLength)?;
                if count <= 0 {
                    start += used;
                    continue;
                }
                if used >= lim.max_buffer {
                    return Err(ProtocolError::TooBigRequest);
                }
                self.remaining = count as usize;
                self.scanned = used;
                self.args.clear();
                // Capacity follows what arrives, not what was declared.
                self.args.reserve(self.remaining.min(16));
            } else {
                let window = &rest[..rest.len().min(lim.max_inline_len + 1)];
                let Some(nl) = window.iter().position(|&b| b == b'\n') else {
                    if rest.len() > lim.max_inline_len {
                        return Err(ProtocolError::TooBigInline);
                    }
                    return self.incomplete(start, buf.len());
                };
                if nl + 1 >= lim.max_buffer {
                    return Err(ProtocolError::TooBigRequest);
                }
                let line = rest[..nl].strip_suffix(b"\r").unwrap_or(&rest[..nl]);
                split_inline(line, &mut self.inline, &mut self.args)?;
                start += nl + 1;
                if !self.args.is_empty() {
                    return Ok(Parsed {
                        consumed: start,
                        request: Some(Args {
                            bytes: &self.inline,
                            ranges: &self.args,
                        }),
                    });
                }
            }
        }
        // Inside a multibulk request, which starts at `buf[start]`.
        let request = &buf[start..];
        loop {
            let rest = &request[self.scanned..];
            if let Some(len) = self.bulk_len {
                // Waiting for a bulk's data.
                if rest.len() < len + 2 {
                    return self.incomplete(start, buf.len());
                }
                if &rest[len..len + 2] != b"\r\n" {
                    return Err(ProtocolError::ExpectedCrlf);
                }
                self.args.push(self.scanned..self.scanned + len);
                self.bulk_len = None;
                self.scanned += len + 2;
                self.remaining -= 1;
                if self.remaining == 0 {
                    let consumed = start + std::mem::take(&mut self.scanned);
                    return Ok(Parsed {
                        consumed,
                        request: Some(Args {
                            bytes: request,
                            ranges: &self.args,
                        }),
                    });
                }
            } else {
                // The next element's header: `$<len>\r\n`.
                let Some(&first) = rest.first() else {
                    return self.incomplete(start, buf.len());
                };
                if first != b'$' {
                    return Err(ProtocolError::ExpectedBulk(first));
                }
                let too_big = ProtocolError::TooBigBulkCount;
                let Some((len, used)) = header(rest, lim.max_inline_len, too_big)? else {
                    return self.incomplete(start, buf.len());
                };
                let len = len
                    .and_then(|n| usize::try_from(n).ok())
                    .filter(|&n| n <= lim.max_bulk_len)
                    .ok_or(ProtocolError::InvalidBulkLength)?;
                // Refuse now a request that cannot fit, rather than buffer toward it.
                if self.scanned + used + len + 2 >= lim.max_buffer {
                    return Err(ProtocolError::TooBigRequest);
                }
                self.scanned += used;
                self.bulk_len = Some(len);
            }
        }
    }

    /// No complete request in `buf`: hand back the empty requests before `start`,
    /// unless the unfinished request from `start` already reaches the buffer limit.
    fn incomplete<'a>(&self, start: usize, len: usize) -> Result<Parsed<'a>, ProtocolError> {
        if len - start >= self.limits.max_buffer {
            return Err(ProtocolError::TooBigRequest);
        }
        Ok(Parsed {
            consumed: start,
            request: None,
        })
    }
}

/// A `*<n>` or `$<n>` header at the front of `bytes`: its number (`None` if it is
/// not a valid integer) and the bytes it takes, sigil and `\r\n` included; `None`
/// when its end has not arrived.
fn header(
    bytes: &[u8],
    max: usize,
    too_big: ProtocolError,
) -> Result<Option<(Option<i64>, usize)>, ProtocolError> {
    Ok(header_line(&bytes[1..], max, too_big)?.map(|(line, used)| (parse_integer(line), used + 1)))
}

/// A header line's content and the bytes it takes with its `\r\n`, `None` when its end
/// has not arrived. A line longer than `max` is refused whether or not its end arrived,
/// so the outcome never depends on how the input was split into reads.
fn header_line(
    bytes: &[u8],
    max: usize,
    too_big: ProtocolError,
) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    let window = &bytes[..bytes.len().min(max + 1)];
    match window.iter().position(|&b| b == b'\r') {
        Some(cr) => match bytes.get(cr + 1) {
            None => Ok(None),
            Some(b'\n') => Ok(Some((&bytes[..cr], cr + 2))),
            Some(_) => Err(ProtocolError::ExpectedCrlf),
        },
        None if bytes.len() > max => Err(too_big),
        None => Ok(None),
    }
}

/// Parses a decimal `i64` the way Redis's `string2ll` does: an optional `-`, no `+`,
/// no spaces, no leading zeros (only `0` itself), at most 20 bytes, no overflow.
///
/// ```
/// use kv_server::resp::parse_integer;
/// assert_eq!(parse_integer(b"-42"), Some(-42));
/// assert_eq!(parse_integer(b"9223372036854775807"), Some(i64::MAX));
/// for bad in [&b""[..], b"+1", b" 1", b"01", b"-0", b"1.5", b"9223372036854775808"] {
///     assert_eq!(parse_integer(bad), None);
/// }
/// ```
pub fn parse_integer(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (negative, digits) = match s.strip_prefix(b"-") {
        Some(digits) => (true, digits),
        None => (false, s),
    };
    if !matches!(digits.first(), Some(b'1'..=b'9')) {
        return None;
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if negative {
        // -2^63 is the one magnitude that fits negated but not positive.
        (v <= 1 << 63).then(|| 0i64.wrapping_sub(v as i64))
    } else {
        i64::try_from(v).ok()
    }
}

/// Bytes that Redis's `isspace` skips between inline arguments (NUL too: Redis stops
/// at it, we treat it as a separator).
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c | 0)
}

/// Splits an inline request line into arguments with Redis's `sdssplitargs` rules:
/// whitespace separates; `"..."` allows `\n \r \t \b \a \\ \"` and `\xHH` escapes;
/// `'...'` allows `\'`; a closing quote must be followed by whitespace or the end.
/// The arguments are written one after another into `out`, and where each is into
/// `ranges` (both cleared first).
fn split_inline(
    line: &[u8],
    out: &mut Vec<u8>,
    ranges: &mut Vec<Range<usize>>,
) -> Result<(), ProtocolError> {
    #[derive(PartialEq)]
    enum Mode {
        Plain,
        Double,
        Single,
    }
    out.clear();
    ranges.clear();
    let mut i = 0;
    loop {
        while i < line.len() && is_space(line[i]) {
            i += 1;
        }
        if i == line.len() {
            return Ok(());
        }
        let from = out.len();
        let mut mode = Mode::Plain;
        loop {
            let Some(&c) = line.get(i) else {
                if mode != Mode::Plain {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
                break;
            };
            match mode {
                Mode::Plain => match c {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => break,
                    b'"' => mode = Mode::Double,
                    b'\'' => mode = Mode::Single,
                    _ => out.push(c),
                },
                Mode::Double => match (c, line.get(i + 1)) {
                    (b'\\', Some(&e)) => match (e, hex_pair(line.get(i + 2..i + 4))) {
                        (b'x', Some(byte)) => {
                            out.push(byte);
                            i += 3;
                        }
                        _ => {
                            out.push(unescape(e));
                            i += 1;
                        }
                    },
                    (b'"', next) => {
                        if next.is_some_and(|&n| !is_space(n)) {
                            return Err(ProtocolError::UnbalancedQuotes);
                        }
                        i += 1;
                        break;
                    }
                    _ => out.push(c),
                },
                Mode::Single => match (c, line.get(i + 1)) {
                    (b'\\', Some(b'\'')) => {
                        out.push(b'\'');
                        i += 1;
                    }
                    (b'\'', next) => {
                        if next.is_some_and(|&n| !is_space(n)) {
                            return Err(ProtocolError::UnbalancedQuotes);
                        }
                        i += 1;
                        break;
                    }
                    _ => out.push(c),
                },
            }
            i += 1;
        }
        ranges.push(from..out.len());
    }
}

/// The byte a backslash escape inside double quotes stands for.
fn unescape(e: u8) -> u8 {
    match e {
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        b'b' => 0x08,
        b'a' => 0x07,
        other => other,
    }
}

/// The byte written by two hex digits, if `pair` is two hex digits.
fn hex_pair(pair: Option<&[u8]>) -> Option<u8> {
    let pair = pair?;
    let hi = (pair[0] as char).to_digit(16)?;
    let lo = (pair[1] as char).to_digit(16)?;
    Some((hi * 16 + lo) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
        let (mut out, mut ranges) = (Vec::new(), Vec::new());
        split_inline(s, &mut out, &mut ranges)?;
        Ok(ranges.into_iter().map(|r| out[r].to_vec()).collect())
    }

    fn strs(v: &[&str]) -> Vec<Vec<u8>> {
        v.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn inline_splits_on_whitespace() {
        assert_eq!(split(b"  SET  k\tv  ").unwrap(), strs(&["SET", "k", "v"]));
        assert_eq!(split(b"").unwrap(), Vec::<Vec<u8>>::new());
        assert_eq!(split(b" \t ").unwrap(), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn inline_quotes_and_escapes() {
        assert_eq!(
            split(br#"SET "a b" 'c d'"#).unwrap(),
            strs(&["SET", "a b", "c d"])
        );
        assert_eq!(
            split(br#""\x41\n\t\\\"" 'it\'s'"#).unwrap(),
            vec![b"A\n\t\\\"".to_vec(), b"it's".to_vec()]
        );
        // A quote inside a plain argument opens a quoted part, as in Redis.
        assert_eq!(split(br#"a"b c""#).unwrap(), strs(&["ab c"]));
        // `\x` without two hex digits is a plain escaped `x`.
        assert_eq!(split(br#""\xZZ""#).unwrap(), strs(&["xZZ"]));
        assert_eq!(split(br#""""#).unwrap(), strs(&[""]));
    }

    #[test]
    fn inline_unbalanced_quotes() {
        for bad in [
            &br#"SET "abc"#[..],
            br#"'abc"#,
            br#""a"b"#,
            br#"'a'b"#,
            br#""abc\"#,
        ] {
            assert_eq!(split(bad), Err(ProtocolError::UnbalancedQuotes), "{bad:?}");
        }
    }

    #[test]
    fn integers_follow_string2ll() {
        assert_eq!(parse_integer(b"0"), Some(0));
        assert_eq!(parse_integer(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_integer(b"-9223372036854775809"), None);
        assert_eq!(parse_integer(b"18446744073709551616"), None);
        assert_eq!(parse_integer(b"-"), None);
        assert_eq!(parse_integer(b"12a"), None);
        assert_eq!(parse_integer(b"1 "), None);
    }

    #[test]
    fn header_line_bounds() {
        let e = ProtocolError::TooBigBulkCount;
        assert_eq!(
            header_line(b"12\r\n", 4, e.clone()),
            Ok(Some((&b"12"[..], 4)))
        );
        assert_eq!(header_line(b"12\r", 4, e.clone()), Ok(None));
        assert_eq!(header_line(b"1234", 4, e.clone()), Ok(None));
        assert_eq!(header_line(b"12345", 4, e.clone()), Err(e.clone()));
        assert_eq!(header_line(b"12345\r\n", 4, e.clone()), Err(e.clone()));
        assert_eq!(
            header_line(b"12\rx", 4, e.clone()),
            Err(ProtocolError::ExpectedCrlf)
        );
    }

    #[test]
    fn state_resets_between_requests() {
        let mut p = Parser::new(Limits::default());
        let r = p.parse(b"*2\r\n$1\r\na\r\n").unwrap();
        assert_eq!((r.consumed, r.request), (0, None));
        assert!(p.scanned > 0);
        p.reset();
        assert_eq!(p.scanned, 0);
        let r = p.parse(b"PING\r\n").unwrap();
        assert_eq!(r.request.unwrap().to_vecs(), strs(&["PING"]));
    }

    #[test]
    fn an_unfinished_request_resumes_where_it_stopped() {
        let input = b"*0\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n";
        let mut p = Parser::new(Limits::default());
        // The empty request before it is consumed; the unfinished one is not.
        let r = p.parse(&input[..20]).unwrap();
        assert_eq!((r.consumed, r.request), (4, None));
        let r = p.parse(&input[4..30]).unwrap();
        assert_eq!((r.consumed, r.request), (0, None));
        let r = p.parse(&input[4..]).unwrap();
        assert_eq!(r.consumed, input.len() - 4);
        assert_eq!(r.request.unwrap().to_vecs(), strs(&["SET", "k", "value"]));
        assert_eq!(p.scanned, 0);
    }
}
