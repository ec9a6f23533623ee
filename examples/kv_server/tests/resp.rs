//! RESP2 request parsing: Redis's error replies byte for byte, pipelining, input split
//! at every point, bounded memory for hostile lengths, and random streams (proptest).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use kv_server::resp::{Decoder, Limits, Parser, ProtocolError, Reply};
use proptest::prelude::*;

/// Records the largest single allocation made by the current thread, so a test can show
/// that a declared length is never allocated ahead of the bytes.
struct LargestAlloc;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded to the system allocator unchanged; the bookkeeping
// only touches a const-initialized thread-local `Cell` (which never allocates) and
// ignores threads where it is already torn down.
unsafe impl GlobalAlloc for LargestAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(layout.size())));
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc`/`realloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(new_size)));
        // SAFETY: `ptr` came from this allocator with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: LargestAlloc = LargestAlloc;

/// Runs `f` and returns the largest allocation it made on this thread.
fn largest_alloc_during(f: impl FnOnce()) -> usize {
    LARGEST.with(|l| l.set(0));
    f();
    LARGEST.with(|l| l.get())
}

type Request = Vec<Vec<u8>>;

fn req(parts: &[&str]) -> Request {
    parts.iter().map(|p| p.as_bytes().to_vec()).collect()
}

/// Everything a decoder with `limits` makes of `input` delivered in one piece: the
/// requests, then the error that stopped it, if any.
fn decode_all(input: &[u8], limits: Limits) -> (Vec<Request>, Option<ProtocolError>) {
    let mut decoder = Decoder::new(limits);
    decoder.extend(input);
    let mut requests = Vec::new();
    loop {
        match decoder.next_request() {
            Ok(Some(r)) => requests.push(r.to_vecs()),
            Ok(None) => return (requests, None),
            Err(e) => return (requests, Some(e)),
        }
    }
}

/// The error reply a stream gets, as the server would send it.
fn error_reply(input: &[u8]) -> Vec<u8> {
    let (_, err) = decode_all(input, Limits::default());
    err.expect("a protocol error").to_resp()
}

#[test]
fn error_replies_are_redis_words_byte_for_byte() {
    let cases: &[(&[u8], &[u8])] = &[
        (
            b"*1\r\nx\r\n",
            b"-ERR Protocol error: expected '$', got 'x'\r\n",
        ),
        (
            b"*2\r\n$3\r\nGET\r\n:1\r\n",
            b"-ERR Protocol error: expected '$', got ':'\r\n",
        ),
        (
            b"*1\r\n\x00\xff",
            b"-ERR Protocol error: expected '$', got '\\x00'\r\n",
        ),
        (
            b"*abc\r\n",
            b"-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*\r\n",
            b"-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*1048577\r\n",
            b"-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*99999999999999999999999\r\n",
            b"-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*1\r\n$-1\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1\r\n$1000000000000\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1\r\n$+5\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1\r\n$\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1\r\n$3\r\nabcd\r\n",
            b"-ERR Protocol error: expected '\\r\\n'\r\n",
        ),
        (
            b"*1\r\n$3\nabc\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"SET \"unterminated\r\n",
            b"-ERR Protocol error: unbalanced quotes in request\r\n",
        ),
        (
            b"SET \"a\"b c\r\n",
            b"-ERR Protocol error: unbalanced quotes in request\r\n",
        ),
        (
            b"*1\r\n$1\rxa\r\n",
            b"-ERR Protocol error: expected '\\r\\n'\r\n",
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(
            String::from_utf8_lossy(&error_reply(input)),
            String::from_utf8_lossy(expected),
            "input {:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn oversized_lines_are_refused_with_or_without_their_end() {
    let long = vec![b'a'; 64 * 1024 + 1];
    let with_end = |prefix: &[u8]| [prefix, &long, b"\r\n"].concat();
    let cases: Vec<(Vec<u8>, &[u8])> = vec![
        (
            long.clone(),
            b"-ERR Protocol error: too big inline request\r\n",
        ),
        (
            with_end(b""),
            b"-ERR Protocol error: too big inline request\r\n",
        ),
        (
            [&b"*"[..], &long].concat(),
            b"-ERR Protocol error: too big mbulk count string\r\n",
        ),
        (
            with_end(b"*"),
            b"-ERR Protocol error: too big mbulk count string\r\n",
        ),
        (
            [&b"*1\r\n$"[..], &long].concat(),
            b"-ERR Protocol error: too big bulk count string\r\n",
        ),
        (
            with_end(b"*1\r\n$"),
            b"-ERR Protocol error: too big bulk count string\r\n",
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(
            String::from_utf8_lossy(&error_reply(&input)),
            String::from_utf8_lossy(expected)
        );
    }
    // Exactly at the limit is fine.
    let at_limit = [&b"ECHO "[..], &vec![b'b'; 64 * 1024 - 5], b"\n"].concat();
    let (requests, err) = decode_all(&at_limit, Limits::default());
    assert_eq!((requests.len(), err), (1, None));
}

#[test]
fn a_request_reaching_the_buffer_limit_is_refused() {
    let limits = Limits {
        max_buffer: 100,
        ..Limits::default()
    };
    // Refused at the bulk header: 50 + 60 bytes cannot fit in 100.
    let input = [&b"*2\r\n$50\r\n"[..], &[b'x'; 50], b"\r\n$60\r\n"].concat();
    let (requests, err) = decode_all(&input, limits);
    assert_eq!(
        (requests.len(), err),
        (0, Some(ProtocolError::TooBigRequest))
    );
    assert_eq!(
        ProtocolError::TooBigRequest.to_resp(),
        b"-ERR Protocol error: request exceeds the query buffer limit\r\n"
    );
    // An unfinished inline line that reaches it.
    let (_, err) = decode_all(&[b'a'; 100], limits);
    assert_eq!(err, Some(ProtocolError::TooBigRequest));
    // Many small requests adding up to more than the limit are fine.
    let pipeline = b"PING\r\n".repeat(100);
    let mut decoder = Decoder::new(limits);
    let mut fed = 0;
    let mut count = 0;
    while fed < pipeline.len() {
        let room = decoder.read_buf(64);
        let n = room.len().min(pipeline.len() - fed);
        room[..n].copy_from_slice(&pipeline[fed..fed + n]);
        decoder.commit(n);
        fed += n;
        while let Some(r) = decoder.next_request().unwrap() {
            assert_eq!(r.to_vecs(), req(&["PING"]));
            count += 1;
        }
        assert!(decoder.held() <= limits.max_buffer);
    }
    assert_eq!(count, 100);
}

/// A connection that sent one big request and went quiet does not keep its memory:
/// once the request is taken out, the buffer shrinks to what the next read asks for.
#[test]
fn an_emptied_buffer_shrinks_to_the_next_read() {
    let value = vec![b'x'; 1 << 20];
    let mut input = format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${}\r\n", value.len()).into_bytes();
    input.extend_from_slice(&value);
    input.extend_from_slice(b"\r\n");
    let mut decoder = Decoder::new(Limits::default());
    let mut fed = 0;
    let mut got = None;
    while fed < input.len() {
        let room = decoder.read_buf(64 * 1024);
        let n = room.len().min(input.len() - fed);
        room[..n].copy_from_slice(&input[fed..fed + n]);
        decoder.commit(n);
        fed += n;
        if let Some(r) = decoder.next_request().unwrap() {
            got = Some(r.len());
        }
    }
    assert_eq!(got, Some(3));
    assert!(decoder.capacity() >= 1 << 20);
    assert_eq!(decoder.read_buf(1024).len(), 1024);
    assert!(
        decoder.capacity() <= 2048,
        "{} bytes kept",
        decoder.capacity()
    );
}

#[test]
fn a_declared_terabyte_is_never_allocated() {
    // Default limits: refused at once.
    let mut err = None;
    let largest = largest_alloc_during(|| {
        err = decode_all(b"*1\r\n$1000000000000\r\n", Limits::default()).1;
    });
    assert_eq!(err, Some(ProtocolError::InvalidBulkLength));
    assert!(largest < 1 << 20, "largest allocation {largest}");

    // Even with limits that allow it, nothing is reserved for bytes not yet received,
    // and a declared array of a million elements reserves no million slots.
    let open = Limits {
        max_bulk_len: usize::MAX / 4,
        max_array_len: usize::MAX / 4,
        max_buffer: usize::MAX / 2,
        ..Limits::default()
    };
    let mut outcome = None;
    let largest = largest_alloc_during(|| {
        let mut parser = Parser::new(open);
        let first = parser.parse(b"*1000000\r\n$1000000000000\r\nabc").unwrap();
        outcome = Some((first.consumed, first.request.is_some()));
    });
    // Nothing consumed: the unfinished request's bytes stay where they arrived.
    assert_eq!(outcome, Some((0, false)));
    assert!(largest < 1 << 20, "largest allocation {largest}");
}

#[test]
fn empty_requests_are_skipped_like_redis() {
    let (requests, err) = decode_all(b"*0\r\n*-1\r\n\r\n   \r\n\nPING\r\n", Limits::default());
    assert_eq!((requests, err), (vec![req(&["PING"])], None));
}

/// A pipeline mixing every request shape.
fn sample_pipeline() -> (Vec<u8>, Vec<Request>) {
    let bytes = [
        &b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nv\r\nxy\r\n"[..],
        b"PING\r\n",
        b"*0\r\n",
        b"*2\r\n$4\r\nECHO\r\n$0\r\n\r\n",
        b"set  \"a b\"\t'c'\n",
        b"*1\r\n$4\r\nPING\r\n",
        b"\r\n",
        b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
    ]
    .concat();
    let expected = vec![
        vec![b"SET".to_vec(), b"k".to_vec(), b"v\r\nxy".to_vec()],
        req(&["PING"]),
        vec![b"ECHO".to_vec(), Vec::new()],
        req(&["set", "a b", "c"]),
        req(&["PING"]),
        req(&["GET", "k"]),
    ];
    (bytes, expected)
}

#[test]
fn pipelined_requests_come_out_in_order() {
    let (bytes, expected) = sample_pipeline();
    assert_eq!(decode_all(&bytes, Limits::default()), (expected, None));
}

/// Feeds `input` cut at `cuts` (ascending positions) through a decoder.
fn decode_in_pieces(input: &[u8], cuts: &[usize]) -> Vec<Request> {
    let mut decoder = Decoder::new(Limits::default());
    let mut requests = Vec::new();
    let mut from = 0;
    for &to in cuts.iter().chain([&input.len()]) {
        decoder.extend(&input[from..to]);
        from = to;
        while let Some(r) = decoder.next_request().expect("valid input") {
            requests.push(r.to_vecs());
        }
    }
    assert_eq!(decoder.held(), 0);
    requests
}

#[test]
fn input_split_at_every_point_gives_the_same_requests() {
    let (bytes, expected) = sample_pipeline();
    for i in 0..=bytes.len() {
        assert_eq!(decode_in_pieces(&bytes, &[i]), expected, "cut at {i}");
    }
    for i in 0..=bytes.len() {
        for j in i..=bytes.len() {
            assert_eq!(decode_in_pieces(&bytes, &[i, j]), expected, "cuts {i}, {j}");
        }
    }
    let every: Vec<usize> = (0..=bytes.len()).collect();
    assert_eq!(decode_in_pieces(&bytes, &every), expected, "byte by byte");
}

#[test]
fn the_parser_alone_resumes_after_consumed_bytes() {
    let (bytes, expected) = sample_pipeline();
    for cut in 0..=bytes.len() {
        let mut parser = Parser::new(Limits::default());
        let mut buf = bytes[..cut].to_vec();
        let mut rest = &bytes[cut..];
        let mut got = Vec::new();
        loop {
            let parsed = parser.parse(&buf).unwrap();
            let (consumed, request) = (parsed.consumed, parsed.request.map(|r| r.to_vecs()));
            buf.drain(..consumed);
            match request {
                Some(r) => got.push(r),
                None if rest.is_empty() => break,
                None => {
                    buf.extend_from_slice(rest);
                    rest = &[];
                }
            }
        }
        assert_eq!(got, expected, "cut at {cut}");
        assert!(buf.is_empty());
    }
}

#[test]
fn a_reply_written_by_the_encoder_is_what_redis_sends() {
    let mut out = Vec::new();
    for reply in [
        Reply::ok(),
        Reply::error("ERR x"),
        Reply::Integer(42),
        Reply::Bulk(b"hello".to_vec()),
        Reply::Nil,
        Reply::Array(vec![Reply::Bulk(b"a".to_vec()), Reply::Nil]),
        Reply::NilArray,
    ] {
        reply.encode(&mut out);
    }
    assert_eq!(
        out,
        b"+OK\r\n-ERR x\r\n:42\r\n$5\r\nhello\r\n$-1\r\n*2\r\n$1\r\na\r\n$-1\r\n*-1\r\n".to_vec()
    );
}

// ---- Random input ----

/// Small limits, so random input reaches every limit; `max_inline_len + 2 < max_buffer`
/// keeps the inline and buffer limits from racing each other.
const SMALL: Limits = Limits {
    max_bulk_len: 40,
    max_array_len: 6,
    max_inline_len: 32,
    max_buffer: 64,
};

/// Bytes that mean something to the parser, to reach deep states more often than
/// uniformly random bytes would.
fn protocolish() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b"*".to_vec()),
        Just(b"$".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"-1".to_vec()),
        Just(b" ".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"'".to_vec()),
        Just(b"\\x4".to_vec()),
        (0u32..60).prop_map(|n| n.to_string().into_bytes()),
        (-1i32..8).prop_map(|n| format!("*{n}\r\n").into_bytes()),
        (-1i32..50).prop_map(|n| format!("${n}\r\n").into_bytes()),
        (0usize..45)
            .prop_map(|n| [format!("${n}\r\n").as_bytes(), &vec![b'v'; n], b"\r\n"].concat()),
        Just(b"abc".to_vec()),
        proptest::collection::vec(0usize..40, 1..4).prop_map(|lens| {
            let mut out = format!("*{}\r\n", lens.len()).into_bytes();
            for n in lens {
                out.extend_from_slice(format!("${n}\r\n").as_bytes());
                out.extend_from_slice(&vec![b'w'; n]);
                out.extend_from_slice(b"\r\n");
            }
            out
        }),
        Just(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n".to_vec()),
        Just(b"PING\r\n".to_vec()),
        proptest::collection::vec(any::<u8>(), 1..8),
    ];
    proptest::collection::vec(token, 0..40).prop_map(|t| t.concat())
}

fn any_stream() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..300),
        3 => protocolish(),
    ]
}

/// Feeds `input` through a decoder the way a server reads a socket (at most `chunk`
/// bytes a read, into `read_buf`), checking the memory bound after every read.
fn decode_as_server(
    input: &[u8],
    chunks: &[usize],
    limits: Limits,
) -> (Vec<Request>, Option<ProtocolError>) {
    let mut decoder = Decoder::new(limits);
    let mut requests = Vec::new();
    let mut fed = 0;
    let mut sizes = chunks.iter().cycle();
    while fed < input.len() {
        let want = *sizes.next().unwrap();
        let room = decoder.read_buf(want);
        assert!(!room.is_empty(), "no room after draining the decoder");
        let n = room.len().min(input.len() - fed);
        room[..n].copy_from_slice(&input[fed..fed + n]);
        decoder.commit(n);
        fed += n;
        assert!(
            decoder.held() <= limits.max_buffer,
            "held {}",
            decoder.held()
        );
        loop {
            match decoder.next_request() {
                Ok(Some(r)) => requests.push(r.to_vecs()),
                Ok(None) => break,
                Err(e) => return (requests, Some(e)),
            }
        }
    }
    (requests, None)
}

/// The same input parsed from one slice holding all of it.
fn parse_whole(input: &[u8], limits: Limits) -> (Vec<Request>, Option<ProtocolError>) {
    let mut parser = Parser::new(limits);
    let mut pos = 0;
    let mut requests = Vec::new();
    loop {
        match parser.parse(&input[pos..]) {
            Ok(p) => {
                pos += p.consumed;
                match p.request {
                    Some(r) => requests.push(r.to_vecs()),
                    None => return (requests, None),
                }
            }
            Err(e) => return (requests, Some(e)),
        }
    }
}

fn encode_request(args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

proptest! {
    #[test]
    fn random_streams_never_panic_and_stay_bounded(
        input in any_stream(),
        chunks in proptest::collection::vec(1usize..64, 1..6),
    ) {
        decode_as_server(&input, &chunks, SMALL);
        decode_as_server(&input, &chunks, Limits::default());
    }

    #[test]
    fn how_input_is_split_never_changes_the_outcome(
        input in any_stream(),
        chunks in proptest::collection::vec(1usize..64, 1..6),
    ) {
        let (pieces, piece_err) = decode_as_server(&input, &chunks, SMALL);
        let (whole, whole_err) = parse_whole(&input, SMALL);
        prop_assert_eq!(pieces, whole);
        prop_assert_eq!(piece_err.is_some(), whole_err.is_some());
        // Which limit trips first may depend on how much has arrived; any other error
        // is decided by the bytes alone.
        if piece_err != Some(ProtocolError::TooBigRequest)
            && whole_err != Some(ProtocolError::TooBigRequest)
        {
            prop_assert_eq!(piece_err, whole_err);
        }
    }

    #[test]
    fn encoded_requests_parse_back(
        requests in proptest::collection::vec(
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 1..5),
            0..8,
        ),
        chunks in proptest::collection::vec(1usize..40, 1..4),
    ) {
        let bytes: Vec<u8> = requests.iter().flat_map(|r| encode_request(r)).collect();
        let (got, err) = decode_as_server(&bytes, &chunks, Limits::default());
        prop_assert_eq!(err, None);
        prop_assert_eq!(got, requests);
    }
}
