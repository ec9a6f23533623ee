//! End to end: the `kv_server` binary, a real process on 127.0.0.1, talked to by a
//! client this project did not write (the `redis` crate), and by raw sockets for what
//! no client library sends (protocol errors).
//!
//! Each test starts the example's binary as a child process with `--port 0 --shards 2`,
//! reads the port from its first line, and stops it (SIGTERM) when done. Cargo builds
//! the package's binary before it runs its integration tests.
//!
//! No timing assertions: the limits below only turn a hang into a failure.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use redis::{Commands, Connection, ConnectionLike, Value};

/// Hang detector for every wait on the server, not a timing assertion.
const HANG_LIMIT: Duration = Duration::from_secs(60);
/// How long a server that is dropped gets to exit after SIGTERM before SIGKILL.
const EXIT_GRACE: Duration = Duration::from_secs(10);
/// A TTL that never runs out while a test runs, so the model need not keep a clock.
const LONG_TTL: i64 = 100_000;

// ---------------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------------

/// The server's binary, which Cargo builds before it runs this package's tests.
fn server_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kv_server"))
}

/// A running `kv_server`, stopped with SIGTERM (then SIGKILL) when dropped.
struct Server {
    child: Option<Child>,
    port: u16,
    /// Everything the server wrote to stderr, shown when a test fails.
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Server {
    /// Starts `kv_server --port 0 --shards=2 [--placement <placement>]` and waits for
    /// its `listening on 127.0.0.1:PORT` line.
    fn start(placement: Option<&str>) -> Server {
        let mut cmd = Command::new(server_binary());
        // Both spellings of a flag's value: `--flag value` and `--flag=value`.
        cmd.args(["--port", "0", "--shards=2"]);
        if let Some(placement) = placement {
            cmd.args(["--placement", placement]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start the kv_server example");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr_pipe = child.stderr.take().expect("piped stderr");

        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stderr_pipe.read(&mut buf) {
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        let (first_line, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout);
            let mut first = String::new();
            let _ = lines.read_line(&mut first);
            let _ = first_line.send(first);
            // Keep reading, so a server that logs to stdout never blocks on the pipe.
            let _ = std::io::copy(&mut lines, &mut std::io::sink());
        });

        // From here on a failure stops the child (Drop) and shows its stderr.
        let mut server = Server {
            child: Some(child),
            port: 0,
            stderr,
        };
        let line = rx
            .recv_timeout(HANG_LIMIT)
            .expect("kv_server printed no first line");
        let port = line
            .strip_suffix('\n')
            .and_then(|l| l.strip_prefix("listening on 127.0.0.1:"))
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|&p| p != 0);
        server.port = port.unwrap_or_else(|| {
            panic!("kv_server's first line is {line:?}, not `listening on 127.0.0.1:PORT`")
        });
        server
    }

    /// A `redis` crate connection; waits on it fail instead of hanging.
    fn client(&self) -> Connection {
        let client =
            redis::Client::open(format!("redis://127.0.0.1:{}/", self.port)).expect("redis URL");
        let con = client
            .get_connection_with_timeout(HANG_LIMIT)
            .expect("connect with the redis crate");
        con.set_read_timeout(Some(HANG_LIMIT)).unwrap();
        con.set_write_timeout(Some(HANG_LIMIT)).unwrap();
        con
    }

    /// A raw socket, for bytes no client library would send.
    fn raw(&self) -> TcpStream {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        stream.set_read_timeout(Some(HANG_LIMIT)).unwrap();
        stream.set_write_timeout(Some(HANG_LIMIT)).unwrap();
        stream
    }

    /// Sends `sig` to the server process.
    fn signal(&self, sig: libc::c_int) {
        let child = self.child.as_ref().expect("the server was already stopped");
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: kill has no memory-safety preconditions. The pid is our own child
        // that has not been waited for (we still own its `Child`), so it cannot have
        // been reused by another process.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig})");
    }

    /// Sends SIGTERM and waits up to `limit` for the process to exit (see
    /// [`wait_exit`](Self::wait_exit)).
    fn terminate(&mut self, limit: Duration) -> Result<ExitStatus, String> {
        self.signal(libc::SIGTERM);
        self.wait_exit(limit)
    }

    /// Waits up to `limit` for the process to exit; after that it is killed and `Err`
    /// says so.
    fn wait_exit(&mut self, limit: Duration) -> Result<ExitStatus, String> {
        let child = self.child.take().expect("a running server");
        wait_with_limit(child, limit)
    }

    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }
}

/// Waits up to `limit` for `child` to exit; after that it is killed and `Err` says so.
fn wait_with_limit(mut child: Child, limit: Duration) -> Result<ExitStatus, String> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait for kv_server") {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("kv_server did not exit within {limit:?}; killed"));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.is_some() {
            if let Err(e) = self.terminate(EXIT_GRACE) {
                eprintln!("{e}");
            }
        }
        if thread::panicking() {
            eprintln!("--- kv_server stderr ---\n{}", self.stderr_text());
        }
    }
}

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

/// A seeded PRNG (SplitMix64), so a failing run can be repeated exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }
}

/// Sends `cmds` as one pipeline and returns every reply, errors included as
/// `Value::ServerError` (the crate's `query` would stop at the first error).
fn send_pipeline(con: &mut Connection, cmds: &[redis::Cmd]) -> Vec<Value> {
    let mut pipe = redis::pipe();
    for cmd in cmds {
        pipe.add_command(cmd.clone());
    }
    con.req_packed_commands(&pipe.get_packed_pipeline(), 0, cmds.len())
        .expect("pipeline replies")
}

/// The per-shard key counts in an `INFO` reply, by shard index. Both spellings are
/// read: `shard<i>_keys:<n>` and `shard<i>:keys=<n>,...`.
fn shard_keys(info: &str) -> Vec<(usize, u64)> {
    let mut shards = Vec::new();
    for line in info.lines() {
        let Some(rest) = line.trim_end().strip_prefix("shard") else {
            continue;
        };
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let Ok(index) = rest[..digits].parse::<usize>() else {
            continue;
        };
        let count = rest[digits..]
            .strip_prefix("_keys:")
            .or_else(|| rest[digits..].strip_prefix(":keys="))
            .map(|n| n.split(',').next().unwrap_or(""))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(count) = count {
            shards.push((index, count));
        }
    }
    shards.sort();
    shards
}

/// Checks that `INFO` reports two shards, each holding some of `keys` (all the keys
/// there are), and each exactly the keys that `shard_index_bytes` gives it: the
/// server routes by shard hash v1 over the key's bytes, as a client would.
fn assert_keys_on_their_shards<'a>(con: &mut Connection, keys: impl IntoIterator<Item = &'a [u8]>) {
    let mut want = vec![(0, 0u64), (1, 0)];
    for key in keys {
        want[shardloop::shard_index_bytes(key, 2)].1 += 1;
    }
    let info: String = redis::cmd("INFO").query(con).expect("INFO");
    let shards = shard_keys(&info);
    assert_eq!(
        shards, want,
        "INFO should list the key counts of shards 0 and 1 that shard_index_bytes predicts:\n{info}"
    );
    assert!(
        shards.iter().all(|s| s.1 > 0),
        "a shard without keys (keys spread by hash):\n{info}"
    );
}

/// How a raw connection ended.
#[derive(Debug, PartialEq)]
enum End {
    /// The server closed it (FIN).
    Closed,
    /// The server reset it.
    Reset,
}

/// Reads until the server closes the connection; fails if it neither closes it nor
/// sends anything for `HANG_LIMIT`.
fn read_to_end(stream: &mut TcpStream) -> (Vec<u8>, End) {
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (got, End::Closed),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (got, End::Reset),
            Err(e) => panic!(
                "the server did not close the connection ({e}); got so far: {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
}

/// Reads one `\r\n`-terminated line (a simple reply, an error, an integer).
fn read_line(stream: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        match stream.read(&mut byte) {
            Ok(0) => panic!(
                "connection closed in the middle of a reply: {:?}",
                String::from_utf8_lossy(&line)
            ),
            Ok(_) => line.push(byte[0]),
            Err(e) => panic!("reading a reply line: {e}"),
        }
    }
    String::from_utf8_lossy(&line).into_owned()
}

// ---------------------------------------------------------------------------------
// The model: a HashMap that answers as Redis does
// ---------------------------------------------------------------------------------

struct Entry {
    value: Vec<u8>,
    /// Whether the key has a (long) TTL; its exact value is not modelled.
    ttl: bool,
}

/// What the server must answer.
#[derive(Debug)]
enum Expect {
    Exact(Value),
    /// An error reply whose text contains this.
    Error(&'static str),
    /// A TTL reply of a key with a deadline: 1..=LONG_TTL seconds.
    Ttl,
}

#[derive(Default)]
struct Model {
    map: HashMap<Vec<u8>, Entry>,
}

fn bulk_or_nil(value: Option<&Entry>) -> Value {
    value.map_or(Value::Nil, |e| Value::BulkString(e.value.clone()))
}

impl Model {
    /// Applies one command (`args[0]` is its name) and says what Redis would answer.
    fn apply(&mut self, args: &[Vec<u8>]) -> Expect {
        use Expect::Exact;
        let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
        let keys = &args[1..];
        match name.as_str() {
            "PING" => Exact(Value::SimpleString("PONG".into())),
            "ECHO" => Exact(Value::BulkString(args[1].clone())),
            "SET" => {
                let exists = self.map.contains_key(&args[1]);
                let opt = args.get(3).map(|o| String::from_utf8_lossy(o).to_string());
                match opt.as_deref() {
                    Some("NX") if exists => return Exact(Value::Nil),
                    Some("XX") if !exists => return Exact(Value::Nil),
                    _ => {}
                }
                let ttl = matches!(opt.as_deref(), Some("EX" | "PX"));
                self.map.insert(
                    args[1].clone(),
                    Entry {
                        value: args[2].clone(),
                        ttl,
                    },
                );
                Exact(Value::Okay)
            }
            "GET" => Exact(bulk_or_nil(self.map.get(&args[1]))),
            "DEL" => Exact(Value::Int(
                keys.iter()
                    .filter(|k| self.map.remove(*k).is_some())
                    .count() as i64,
            )),
            "EXISTS" => Exact(Value::Int(
                keys.iter().filter(|k| self.map.contains_key(*k)).count() as i64,
            )),
            "INCR" | "DECR" | "INCRBY" => {
                let by = match name.as_str() {
                    "INCR" => 1,
                    "DECR" => -1,
                    _ => String::from_utf8_lossy(&args[2]).parse::<i64>().unwrap(),
                };
                let Some(entry) = self.map.get_mut(&args[1]) else {
                    self.map.insert(
                        args[1].clone(),
                        Entry {
                            value: by.to_string().into_bytes(),
                            ttl: false,
                        },
                    );
                    return Exact(Value::Int(by));
                };
                // Values made by this test are canonical decimals or start with 'v'.
                let Some(current) = std::str::from_utf8(&entry.value)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                else {
                    return Expect::Error("not an integer");
                };
                let Some(next) = current.checked_add(by) else {
                    return Expect::Error("overflow");
                };
                entry.value = next.to_string().into_bytes();
                Exact(Value::Int(next))
            }
            "MSET" => {
                for pair in keys.chunks(2) {
                    self.map.insert(
                        pair[0].clone(),
                        Entry {
                            value: pair[1].clone(),
                            ttl: false,
                        },
                    );
                }
                Exact(Value::Okay)
            }
            "MGET" => Exact(Value::Array(
                keys.iter().map(|k| bulk_or_nil(self.map.get(k))).collect(),
            )),
            "EXPIRE" => {
                let seconds: i64 = String::from_utf8_lossy(&args[2]).parse().unwrap();
                if !self.map.contains_key(&args[1]) {
                    return Exact(Value::Int(0));
                }
                if seconds <= 0 {
                    self.map.remove(&args[1]);
                } else {
                    self.map.get_mut(&args[1]).unwrap().ttl = true;
                }
                Exact(Value::Int(1))
            }
            "TTL" => match self.map.get(&args[1]) {
                None => Exact(Value::Int(-2)),
                Some(e) if !e.ttl => Exact(Value::Int(-1)),
                Some(_) => Expect::Ttl,
            },
            "DBSIZE" => Exact(Value::Int(self.map.len() as i64)),
            "FLUSHALL" => {
                self.map.clear();
                Exact(Value::Okay)
            }
            other => panic!("the model does not know {other}"),
        }
    }
}

fn matches(expect: &Expect, got: &Value) -> bool {
    match (expect, got) {
        (Expect::Exact(want), got) => want == got,
        (Expect::Error(text), Value::ServerError(err)) => {
            format!("{} {}", err.code(), err.details().unwrap_or("")).contains(text)
        }
        (Expect::Ttl, Value::Int(n)) => (1..=LONG_TTL).contains(n),
        _ => false,
    }
}

/// The keys the random operations use: plain ones and binary ones (spaces, CRLF, NUL,
/// non-UTF-8), enough of them that both shards own some.
fn key_pool() -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = (0..40).map(|i| format!("key:{i}").into_bytes()).collect();
    for i in 0..8u8 {
        keys.push(vec![b'b', b' ', b'\r', b'\n', 0, 0xff, b'0' + i]);
    }
    keys
}

/// A value: a canonical integer (sometimes near the i64 limits, for overflow), an
/// empty string, or `v` followed by arbitrary bytes (never an integer).
fn random_value(rng: &mut Rng) -> Vec<u8> {
    match rng.below(10) {
        0..=2 => rng.range(-1000, 1000).to_string().into_bytes(),
        3 => (i64::MAX - rng.range(0, 1000)).to_string().into_bytes(),
        4 => (i64::MIN + rng.range(0, 1000)).to_string().into_bytes(),
        5 => Vec::new(),
        _ => {
            let len = rng.below(30) as usize;
            let mut v = vec![b'v'];
            v.extend((0..len).map(|_| rng.next() as u8));
            v
        }
    }
}

/// One random command, as its arguments.
fn random_command(rng: &mut Rng, keys: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let key = |rng: &mut Rng| keys[rng.below(keys.len() as u64) as usize].clone();
    let word = |s: &str| s.as_bytes().to_vec();
    let some_keys = |rng: &mut Rng, max: u64| -> Vec<Vec<u8>> {
        (0..1 + rng.below(max)).map(|_| key(rng)).collect()
    };
    let mut args = Vec::new();
    match rng.below(100) {
        0..=14 => {
            args.extend([word("SET"), key(rng), random_value(rng)]);
            match rng.below(8) {
                0 => args.push(word("NX")),
                1 => args.push(word("XX")),
                2 => args.extend([word("EX"), LONG_TTL.to_string().into_bytes()]),
                3 => args.extend([word("PX"), (LONG_TTL * 1000).to_string().into_bytes()]),
                _ => {}
            }
        }
        15..=29 => args.extend([word("GET"), key(rng)]),
        30..=35 => {
            args.push(word("DEL"));
            args.extend(some_keys(rng, 4));
        }
        36..=41 => {
            args.push(word("EXISTS"));
            args.extend(some_keys(rng, 4));
        }
        42..=47 => args.extend([word("INCR"), key(rng)]),
        48..=50 => args.extend([word("DECR"), key(rng)]),
        51..=56 => args.extend([
            word("INCRBY"),
            key(rng),
            rng.range(-1000, 1000).to_string().into_bytes(),
        ]),
        57..=66 => {
            args.push(word("MSET"));
            for _ in 0..1 + rng.below(6) {
                args.extend([key(rng), random_value(rng)]);
            }
        }
        67..=78 => {
            args.push(word("MGET"));
            args.extend(some_keys(rng, 8));
        }
        79..=84 => {
            let seconds = match rng.below(6) {
                0 => rng.range(-5, 0),
                _ => LONG_TTL,
            };
            args.extend([word("EXPIRE"), key(rng), seconds.to_string().into_bytes()]);
        }
        85..=91 => args.extend([word("TTL"), key(rng)]),
        92..=94 => args.push(word("DBSIZE")),
        95..=96 => args.extend([word("ECHO"), random_value(rng)]),
        97..=98 => args.push(word("PING")),
        // FLUSHALL rarely: it empties the model too, so keep it from doing so often.
        _ if rng.below(4) == 0 => args.push(word("FLUSHALL")),
        _ => args.extend([word("GET"), key(rng)]),
    }
    args
}

fn to_cmd(args: &[Vec<u8>]) -> redis::Cmd {
    let mut cmd = redis::cmd(&String::from_utf8_lossy(&args[0]));
    for arg in &args[1..] {
        cmd.arg(arg.as_slice());
    }
    cmd
}

fn show(args: &[Vec<u8>]) -> String {
    args.iter()
        .map(|a| format!("{:?}", String::from_utf8_lossy(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Thousands of random commands, in pipelines of 1 to 64 spread over three
/// connections, every reply checked against the model; then the whole keyspace.
fn random_operations_match_a_model(placement: &str, seed: u64) {
    const OPS: usize = 4000;
    let server = Server::start(Some(placement));
    let mut cons: Vec<Connection> = (0..3).map(|_| server.client()).collect();
    let keys = key_pool();
    let mut rng = Rng(seed);
    let mut model = Model::default();

    let mut done = 0;
    let mut batch_no = 0;
    while done < OPS {
        let size = if rng.below(4) == 0 {
            1
        } else {
            1 + rng.below(64) as usize
        };
        let batch: Vec<Vec<Vec<u8>>> = (0..size).map(|_| random_command(&mut rng, &keys)).collect();
        let cmds: Vec<redis::Cmd> = batch.iter().map(|a| to_cmd(a)).collect();
        let con = &mut cons[batch_no % 3];
        let replies = send_pipeline(con, &cmds);
        assert_eq!(replies.len(), batch.len());
        for (i, (args, got)) in batch.iter().zip(&replies).enumerate() {
            let expect = model.apply(args);
            assert!(
                matches(&expect, got),
                "seed {seed}, {placement}: command {} ({}) expected {expect:?}, got {got:?}",
                done + i,
                show(args),
            );
        }
        done += size;
        batch_no += 1;
    }

    // The keyspace as a whole: DBSIZE, and every key's value.
    let con = &mut cons[0];
    let size: i64 = redis::cmd("DBSIZE").query(con).unwrap();
    assert_eq!(
        size,
        model.map.len() as i64,
        "DBSIZE after {OPS} operations"
    );
    let mut mget = redis::cmd("MGET");
    for key in &keys {
        mget.arg(key.as_slice());
    }
    let values: Vec<Option<Vec<u8>>> = mget.query(con).unwrap();
    for (key, got) in keys.iter().zip(values) {
        let want = model.map.get(key).map(|e| e.value.clone());
        assert_eq!(got, want, "the value of {:?}", String::from_utf8_lossy(key));
    }

    // Every key set: both shards must own some of them.
    let mut mset = redis::cmd("MSET");
    for key in &keys {
        mset.arg(key.as_slice()).arg(b"x".as_slice());
    }
    let () = mset.query(con).unwrap();
    assert_keys_on_their_shards(con, keys.iter().map(Vec::as_slice));
}

#[test]
fn random_operations_match_a_model_reuseport() {
    random_operations_match_a_model("reuseport", 0x5eed_0001);
}

#[test]
fn random_operations_match_a_model_dispatch() {
    random_operations_match_a_model("dispatch", 0x5eed_0002);
}

// ---------------------------------------------------------------------------------
// Commands one by one
// ---------------------------------------------------------------------------------

fn commands_answer_as_redis_does(placement: &str) {
    let server = Server::start(Some(placement));
    let mut con = server.client();
    let con = &mut con;

    let pong: String = redis::cmd("PING").query(con).unwrap();
    assert_eq!(pong, "PONG");
    let echo: Vec<u8> = redis::cmd("ECHO")
        .arg(b"a\r\nb\0".as_slice())
        .query(con)
        .unwrap();
    assert_eq!(echo, b"a\r\nb\0");

    // SET and GET, with binary-safe values.
    let () = con.set("greeting", "hello").unwrap();
    assert_eq!(
        con.get::<_, Option<String>>("greeting").unwrap().as_deref(),
        Some("hello")
    );
    assert_eq!(con.get::<_, Option<String>>("nothing").unwrap(), None);
    let binary: Vec<u8> = (0..=255).collect();
    let () = con.set(b"bin\0key".as_slice(), binary.as_slice()).unwrap();
    assert_eq!(
        con.get::<_, Vec<u8>>(b"bin\0key".as_slice()).unwrap(),
        binary
    );

    // SET's conditions and TTLs.
    let nx: Option<String> = redis::cmd("SET")
        .arg("greeting")
        .arg("x")
        .arg("NX")
        .query(con)
        .unwrap();
    assert_eq!(nx, None, "SET NX on an existing key");
    let xx: Option<String> = redis::cmd("SET")
        .arg("fresh")
        .arg("x")
        .arg("XX")
        .query(con)
        .unwrap();
    assert_eq!(xx, None, "SET XX on a missing key");
    assert!(!con.exists::<_, bool>("fresh").unwrap());
    let nx: Option<String> = redis::cmd("SET")
        .arg("fresh")
        .arg("1")
        .arg("NX")
        .query(con)
        .unwrap();
    assert_eq!(nx.as_deref(), Some("OK"));
    let () = redis::cmd("SET")
        .arg("t")
        .arg("v")
        .arg("EX")
        .arg(100)
        .query(con)
        .unwrap();
    let ttl: i64 = con.ttl("t").unwrap();
    assert!((1..=100).contains(&ttl), "TTL after SET EX 100: {ttl}");
    let () = redis::cmd("SET")
        .arg("t")
        .arg("v")
        .arg("PX")
        .arg(100_000)
        .query(con)
        .unwrap();
    let ttl: i64 = con.ttl("t").unwrap();
    assert!((1..=100).contains(&ttl), "TTL after SET PX 100000: {ttl}");
    let () = con.set("t", "v").unwrap();
    assert_eq!(
        con.ttl::<_, i64>("t").unwrap(),
        -1,
        "a plain SET clears the TTL"
    );
    assert_eq!(con.ttl::<_, i64>("missing").unwrap(), -2);

    // EXPIRE: a key past its deadline is gone (checked after it, never before).
    assert_eq!(con.expire::<_, i64>("t", 100).unwrap(), 1);
    let ttl: i64 = con.ttl("t").unwrap();
    assert!((1..=100).contains(&ttl), "TTL after EXPIRE 100: {ttl}");
    assert_eq!(con.expire::<_, i64>("missing", 100).unwrap(), 0);
    let () = redis::cmd("SET")
        .arg("short")
        .arg("v")
        .arg("PX")
        .arg(1)
        .query(con)
        .unwrap();
    thread::sleep(Duration::from_millis(50));
    assert_eq!(
        con.get::<_, Option<String>>("short").unwrap(),
        None,
        "expired key"
    );
    assert_eq!(con.expire::<_, i64>("t", 0).unwrap(), 1);
    assert!(!con.exists::<_, bool>("t").unwrap(), "EXPIRE 0 deletes");

    // Counters.
    assert_eq!(con.incr::<_, _, i64>("n", 1).unwrap(), 1);
    assert_eq!(redis::cmd("INCR").arg("n").query::<i64>(con).unwrap(), 2);
    assert_eq!(redis::cmd("DECR").arg("n").query::<i64>(con).unwrap(), 1);
    assert_eq!(
        redis::cmd("INCRBY")
            .arg("n")
            .arg(41)
            .query::<i64>(con)
            .unwrap(),
        42
    );
    assert_eq!(
        redis::cmd("INCRBY")
            .arg("n")
            .arg(-50)
            .query::<i64>(con)
            .unwrap(),
        -8
    );
    assert_eq!(con.get::<_, String>("n").unwrap(), "-8");
    let err = redis::cmd("INCR")
        .arg("greeting")
        .query::<i64>(con)
        .unwrap_err();
    assert!(
        err.to_string().contains("not an integer"),
        "INCR on text: {err}"
    );
    let () = con.set("max", i64::MAX).unwrap();
    let err = redis::cmd("INCR").arg("max").query::<i64>(con).unwrap_err();
    assert!(
        err.to_string().contains("overflow"),
        "INCR past i64::MAX: {err}"
    );

    // DEL and EXISTS on several keys (and shards) at once.
    let () = con.mset(&[("d1", "1"), ("d2", "2"), ("d3", "3")]).unwrap();
    let n: i64 = redis::cmd("EXISTS")
        .arg(&["d1", "d2", "d3", "d1", "nope"])
        .query(con)
        .unwrap();
    assert_eq!(n, 4, "EXISTS counts a repeated key each time");
    assert_eq!(con.del::<_, i64>(&["d1", "d2", "nope"]).unwrap(), 2);
    assert_eq!(con.exists::<_, i64>(&["d1", "d2", "d3"]).unwrap(), 1);

    // Errors are replies; the connection goes on.
    let err = redis::cmd("NOSUCHCOMMAND")
        .arg("x")
        .query::<Value>(con)
        .unwrap_err();
    assert!(
        err.to_string().contains("unknown command"),
        "unknown command: {err}"
    );
    let err = redis::cmd("GET").query::<Value>(con).unwrap_err();
    assert!(
        err.to_string().contains("wrong number of arguments"),
        "GET without a key: {err}"
    );
    let err = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .arg("EX")
        .arg("soon")
        .query::<Value>(con)
        .unwrap_err();
    assert!(
        err.to_string().contains("not an integer"),
        "SET EX soon: {err}"
    );

    // COMMAND answers (redis-cli asks it at start), DBSIZE and FLUSHALL.
    let commands: Value = redis::cmd("COMMAND").query(con).unwrap();
    assert!(
        matches!(&commands, Value::Array(items) if !items.is_empty()),
        "COMMAND: {commands:?}"
    );
    let size: i64 = redis::cmd("DBSIZE").query(con).unwrap();
    assert_eq!(
        size, 6,
        "greeting, bin\\0key, fresh, n, max, d3, and nothing else"
    );
    let () = redis::cmd("FLUSHALL").query(con).unwrap();
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(con).unwrap(), 0);

    // QUIT: +OK, then the server closes the connection.
    let mut raw = server.raw();
    raw.write_all(b"PING\r\nQUIT\r\n").unwrap();
    let (got, _) = read_to_end(&mut raw);
    assert_eq!(
        String::from_utf8_lossy(&got),
        "+PONG\r\n+OK\r\n",
        "PING, QUIT"
    );
}

#[test]
fn commands_answer_as_redis_does_reuseport() {
    commands_answer_as_redis_does("reuseport");
}

#[test]
fn commands_answer_as_redis_does_dispatch() {
    commands_answer_as_redis_does("dispatch");
}

// ---------------------------------------------------------------------------------
// Pipelines, and keys on both shards
// ---------------------------------------------------------------------------------

fn pipelines_and_multi_key_commands_span_shards(placement: &str) {
    const N: usize = 1000;
    let server = Server::start(Some(placement));
    let mut con = server.client();
    let con = &mut con;

    // 1000 SETs in one pipeline, then 1000 GETs: every reply, in order.
    let mut pipe = redis::pipe();
    for i in 0..N {
        pipe.set(format!("p:{i}"), i);
    }
    let oks: Vec<Value> = pipe.query(con).unwrap();
    assert_eq!(oks, vec![Value::Okay; N]);
    let mut pipe = redis::pipe();
    for i in 0..N {
        pipe.get(format!("p:{i}"));
    }
    let values: Vec<Option<usize>> = pipe.query(con).unwrap();
    assert_eq!(values, (0..N).map(Some).collect::<Vec<_>>());

    // 1000 INCRs over ten counters (on both shards), interleaved: the replies come
    // back in request order, whichever shard answered each.
    let mut pipe = redis::pipe();
    for i in 0..N {
        pipe.incr(format!("c:{}", i % 10), 1);
    }
    let counts: Vec<i64> = pipe.query(con).unwrap();
    let want: Vec<i64> = (0..N).map(|i| (i / 10 + 1) as i64).collect();
    assert_eq!(counts, want);

    // MSET and MGET across shards in one command each.
    let pairs: Vec<(String, String)> = (0..200)
        .map(|i| (format!("m:{i}"), format!("v{i}")))
        .collect();
    let () = con.mset(&pairs).unwrap();
    let mut keys: Vec<String> = pairs.iter().map(|p| p.0.clone()).collect();
    keys.insert(100, "m:absent".to_string());
    let got: Vec<Option<String>> = con.mget(&keys).unwrap();
    let mut want: Vec<Option<String>> = pairs.iter().map(|p| Some(p.1.clone())).collect();
    want.insert(100, None);
    assert_eq!(got, want, "MGET across shards, in key order");
    assert_eq!(con.del::<_, i64>(&keys).unwrap(), 200, "DEL across shards");
    assert_eq!(con.exists::<_, i64>(&keys).unwrap(), 0);

    let total = (N + 10) as u64;
    assert_eq!(redis::cmd("DBSIZE").query::<u64>(con).unwrap(), total);
    let left: Vec<String> = (0..N)
        .map(|i| format!("p:{i}"))
        .chain((0..10).map(|i| format!("c:{i}")))
        .collect();
    assert_keys_on_their_shards(con, left.iter().map(String::as_bytes));
}

#[test]
fn pipelines_and_multi_key_commands_span_shards_reuseport() {
    pipelines_and_multi_key_commands_span_shards("reuseport");
}

#[test]
fn pipelines_and_multi_key_commands_span_shards_dispatch() {
    pipelines_and_multi_key_commands_span_shards("dispatch");
}

/// Several clients at once incrementing the same counters: no increment is lost and
/// each client sees its own increments in order.
#[test]
fn concurrent_clients_lose_no_increment() {
    const CLIENTS: usize = 4;
    const ROUNDS: usize = 20;
    const PER_ROUND: usize = 50;
    const COUNTERS: usize = 5;
    let server = Server::start(Some("reuseport"));
    thread::scope(|s| {
        for _ in 0..CLIENTS {
            let mut con = server.client();
            s.spawn(move || {
                let mut last = [0i64; COUNTERS];
                for _ in 0..ROUNDS {
                    let mut pipe = redis::pipe();
                    for i in 0..PER_ROUND {
                        pipe.incr(format!("shared:{}", i % COUNTERS), 1);
                    }
                    let counts: Vec<i64> = pipe.query(&mut con).unwrap();
                    for (i, n) in counts.into_iter().enumerate() {
                        let c = i % COUNTERS;
                        assert!(n > last[c], "counter {c} went from {} to {n}", last[c]);
                        last[c] = n;
                    }
                }
            });
        }
    });
    let mut con = server.client();
    let keys: Vec<String> = (0..COUNTERS).map(|c| format!("shared:{c}")).collect();
    let counts: Vec<i64> = con.mget(&keys).unwrap();
    assert_eq!(
        counts.iter().sum::<i64>(),
        (CLIENTS * ROUNDS * PER_ROUND) as i64,
        "counters: {counts:?}"
    );
}

// ---------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------

/// Sends `input` on a fresh connection: the server must answer with one Redis-style
/// protocol error mentioning `message` (after the replies in `before`) and close it.
fn assert_protocol_error(server: &Server, input: &[u8], before: &str, message: &str) {
    let mut raw = server.raw();
    // The server may close before taking all of the input: a failed write is fine.
    let _ = raw.write_all(input);
    let (got, _end) = read_to_end(&mut raw);
    let got = String::from_utf8_lossy(&got);
    let what = String::from_utf8_lossy(&input[..input.len().min(40)]);
    let error = got.strip_prefix(before).unwrap_or_else(|| {
        panic!("input {what:?}: expected the replies {before:?} first, got {got:?}")
    });
    assert!(
        error.starts_with("-ERR Protocol error") && error.ends_with("\r\n"),
        "input {what:?}: expected one `-ERR Protocol error...` line, got {got:?}"
    );
    assert_eq!(
        error.matches("\r\n").count(),
        1,
        "input {what:?}: got {got:?}"
    );
    assert!(
        error.contains(message),
        "input {what:?}: expected {message:?} in {got:?}"
    );
}

fn protocol_errors_close_only_that_connection(placement: &str) {
    let server = Server::start(Some(placement));

    // A well-behaved client keeps going on its own thread the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let mut good = server.client();
    let busy = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut answered = 0u64;
            while !stop.load(Ordering::Relaxed) && answered < 1_000_000 {
                let key = format!("good:{}", answered % 16);
                let () = good.set(&key, answered).unwrap();
                assert_eq!(good.get::<_, u64>(&key).unwrap(), answered);
                answered += 1;
            }
            answered
        })
    };
    let mut checker = server.client();
    let mut still_answers = |after: &str| {
        let () = checker.set("checker", after).unwrap();
        let got: String = checker.get("checker").unwrap();
        assert_eq!(got, after, "the well-behaved client after {after}");
    };

    let huge_inline: Vec<u8> = {
        let mut rng = Rng(7);
        let mut junk: Vec<u8> = (0..64 * 1024 + 1)
            .map(|_| match rng.next() as u8 {
                b'\n' => 0,
                b => b,
            })
            .collect();
        junk[0] = 0xfe;
        junk
    };
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "negative bulk length",
            b"*1\r\n$-5\r\n".to_vec(),
            "",
            "invalid bulk length",
        ),
        (
            "a declared bulk of 10^12 bytes",
            b"*2\r\n$3\r\nGET\r\n$1000000000000\r\n".to_vec(),
            "",
            "invalid bulk length",
        ),
        (
            "array length not a number",
            b"*abc\r\n".to_vec(),
            "",
            "invalid multibulk length",
        ),
        (
            "huge array length",
            b"*99999999999\r\n".to_vec(),
            "",
            "invalid multibulk length",
        ),
        (
            "unknown type byte in an array",
            b"*2\r\n:5\r\n".to_vec(),
            "",
            "expected '$'",
        ),
        (
            "bulk not followed by CRLF",
            b"*1\r\n$3\r\nGETxx".to_vec(),
            "",
            "expected '\\r\\n'",
        ),
        (
            "unbalanced quotes",
            b"SET k \"abc\r\n".to_vec(),
            "",
            "unbalanced quotes",
        ),
        (
            "binary junk after an array marker",
            b"*\xff\xfe\x00\r\n".to_vec(),
            "",
            "invalid multibulk length",
        ),
        (
            "64 KiB of binary junk without a newline",
            huge_inline,
            "",
            "too big inline request",
        ),
        (
            "replies before the error still arrive",
            b"PING\r\n*1\r\n$4\r\nECHO\r\n*1\r\n$-1\r\n".to_vec(),
            "+PONG\r\n-ERR wrong number of arguments for 'echo' command\r\n",
            "invalid bulk length",
        ),
    ];
    for (what, input, before, message) in &cases {
        still_answers(&format!("before: {what}"));
        assert_protocol_error(&server, input, before, message);
        still_answers(what);
    }

    // Not protocol errors: these get an error reply, or none, and the connection
    // stays open.
    let mut raw = server.raw();
    raw.write_all(b"\x01\x02\xfe\xff\r\n").unwrap();
    let reply = read_line(&mut raw);
    assert!(
        reply.starts_with("-ERR unknown command"),
        "inline binary junk: {reply:?}"
    );
    raw.write_all(b"*1\r\n$3\r\nGET\r\n").unwrap();
    let reply = read_line(&mut raw);
    assert!(
        reply.starts_with("-ERR wrong number of arguments"),
        "GET without key: {reply:?}"
    );
    // A negative array length is a null request, which Redis skips without a reply.
    raw.write_all(b"*-5\r\nPING\r\n").unwrap();
    assert_eq!(read_line(&mut raw), "+PONG\r\n", "after *-5");

    // Half a request, then the client hangs up: the server closes its side too.
    raw.write_all(b"*2\r\n$3\r\nGET\r\n$10\r\nabc").unwrap();
    raw.shutdown(Shutdown::Write).unwrap();
    let (got, _) = read_to_end(&mut raw);
    assert!(
        got.is_empty() || got.starts_with(b"-ERR"),
        "after half a request and EOF: {:?}",
        String::from_utf8_lossy(&got)
    );

    stop.store(true, Ordering::Relaxed);
    let answered = busy.join().expect("the well-behaved client failed");
    assert!(answered > 0, "the well-behaved client got no answer at all");
    still_answers("all the bad input");
}

#[test]
fn protocol_errors_close_only_that_connection_reuseport() {
    protocol_errors_close_only_that_connection("reuseport");
}

#[test]
fn protocol_errors_close_only_that_connection_dispatch() {
    protocol_errors_close_only_that_connection("dispatch");
}

// ---------------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------------

/// SIGTERM while a pipeline is being answered and another client sits idle: every
/// reply that arrives is whole and in order (the server finishes what it took in
/// instead of cutting a reply), the connections end, and the process exits 0.
fn sigterm_finishes_in_flight_requests(placement: &str) {
    const N: usize = 20_000;
    let mut server = Server::start(Some(placement));
    let mut idle = server.client();
    let _: String = redis::cmd("PING").query(&mut idle).unwrap();

    let mut pipeline = Vec::new();
    for i in 0..N {
        let (k, v) = (format!("inflight:{i}"), i.to_string());
        pipeline.extend_from_slice(
            format!(
                "*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n${}\r\n{v}\r\n",
                k.len(),
                v.len()
            )
            .as_bytes(),
        );
    }
    let mut raw = server.raw();
    let mut writer = raw.try_clone().unwrap();
    // On its own thread: once the server stops reading, a write may block or fail.
    let sender = thread::spawn(move || writer.write_all(&pipeline).is_ok());

    // The first reply shows the server is working through the pipeline: stop it now.
    let mut first = [0u8; 5];
    raw.read_exact(&mut first).expect("the first reply");
    assert_eq!(&first, b"+OK\r\n");
    server.signal(libc::SIGTERM);

    let (rest, end) = read_to_end(&mut raw);
    let whole = rest.len() / 5;
    assert!(
        rest.chunks(5).all(|r| r == b"+OK\r\n") && rest.len() % 5 == 0,
        "{placement}: after SIGTERM the replies are not whole `+OK`s ({} bytes, ended by {end:?}): \
         {:?}",
        rest.len(),
        String::from_utf8_lossy(&rest[rest.len().saturating_sub(40)..])
    );
    eprintln!(
        "{placement}: {} of {N} pipelined SETs answered before the close ({end:?})",
        whole + 1
    );
    let _ = sender.join();

    // SIGTERM was sent already; a second one could mean "exit now".
    let status = server
        .wait_exit(HANG_LIMIT)
        .expect("kv_server exits after SIGTERM");
    assert!(
        status.success(),
        "{placement}: kv_server exited with {status} after SIGTERM"
    );
    assert!(
        redis::cmd("PING").query::<String>(&mut idle).is_err(),
        "the idle connection still answers after the server exited"
    );
}

#[test]
fn sigterm_finishes_in_flight_requests_reuseport() {
    sigterm_finishes_in_flight_requests("reuseport");
}

#[test]
fn sigterm_finishes_in_flight_requests_dispatch() {
    sigterm_finishes_in_flight_requests("dispatch");
}

/// SIGINT, too, stops the server cleanly; and a default placement is chosen when
/// none is given.
#[test]
fn sigint_stops_a_server_with_the_default_placement() {
    let mut server = Server::start(None);
    let mut con = server.client();
    let () = con.set("k", "v").unwrap();
    assert_eq!(con.get::<_, String>("k").unwrap(), "v");
    server.signal(libc::SIGINT);
    let status = server
        .wait_exit(HANG_LIMIT)
        .expect("kv_server exits after SIGINT");
    assert!(
        status.success(),
        "kv_server exited with {status} after SIGINT"
    );
}

/// Runs `kv_server args` to its end (it must end by itself): exit status, stdout,
/// stderr.
fn run_to_exit(args: &[&str]) -> (ExitStatus, String, String) {
    let mut child = Command::new(server_binary())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kv_server");
    // Read both pipes while waiting, so a full pipe cannot stall the child.
    let read = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let status = wait_with_limit(child, HANG_LIMIT)
        .unwrap_or_else(|e| panic!("kv_server {args:?} kept running: {e}"));
    (status, stdout.join().unwrap(), stderr.join().unwrap())
}

/// `--help` (and `-h`) prints the usage, with every flag, on stdout and exits 0.
#[test]
fn help_prints_the_usage_and_exits_0() {
    for flag in ["--help", "-h"] {
        let (status, stdout, stderr) = run_to_exit(&[flag]);
        assert_eq!(
            status.code(),
            Some(0),
            "kv_server {flag}: {status}, {stderr}"
        );
        assert!(stdout.starts_with("usage: kv_server"), "{stdout}");
        for option in [
            "--port",
            "--shards",
            "--placement",
            "--grace-ms",
            "--no-pin",
            "--spin-us",
        ] {
            assert!(
                stdout.contains(option),
                "kv_server {flag} omits {option}:\n{stdout}"
            );
        }
    }
}

/// A command line the server cannot use is refused with a message naming the
/// problem, then the usage, on stderr, and exit status 2: not ignored.
#[test]
fn a_bad_command_line_is_refused() {
    for (args, problem) in [
        (&["--bogus"][..], "--bogus"),
        (&["--placement", "nowhere"], "nowhere"),
        (&["--placement=nowhere"], "nowhere"),
        (&["--port", "not-a-port"], "--port"),
        (&["--port=70000"], "--port"),
        (&["--shards", "many"], "--shards"),
        (&["--shards", "0"], "--shards"),
        (&["--port"], "--port"),
        (&["--no-pin=yes"], "--no-pin"),
        (&["stray"], "stray"),
    ] {
        let (status, _, stderr) = run_to_exit(args);
        assert_eq!(
            status.code(),
            Some(2),
            "kv_server {args:?}: {status}, {stderr}"
        );
        assert!(
            stderr.starts_with("kv_server: ") && stderr.contains(problem),
            "kv_server {args:?} should name {problem:?} first:\n{stderr}"
        );
        assert!(stderr.contains("usage: kv_server"), "no usage:\n{stderr}");
    }
}

/// Pairs of keys on different shards (2 shards, shard hash v1).
fn cross_shard_pairs(n: usize) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for i in 0.. {
        let (a, b) = (format!("pa{i}"), format!("pb{i}"));
        if shardloop::shard_index_bytes(a.as_bytes(), 2)
            != shardloop::shard_index_bytes(b.as_bytes(), 2)
        {
            pairs.push((a, b));
            if pairs.len() == n {
                return pairs;
            }
        }
    }
    unreachable!()
}

/// Redis's promise for multi-key commands, across shards: writers `MSET a v b v` (and
/// `MSETNX`-free `MULTI` blocks) while readers `MGET a b` and read both in `MULTI`
/// blocks; no reader ever sees `a` and `b` from different writes.
#[test]
fn multi_key_commands_are_atomic_across_shards() {
    let server = Server::start(None);
    let pairs = Arc::new(cross_shard_pairs(8));
    const ROUNDS: usize = 1500;
    let mut threads = Vec::new();
    for writer in 0..2 {
        let mut con = server.client();
        let pairs = pairs.clone();
        threads.push(thread::spawn(move || {
            let mut rng = Rng(writer + 1);
            for round in 0..ROUNDS {
                let (a, b) = &pairs[rng.below(pairs.len() as u64) as usize];
                let v = format!("w{writer}-{round}");
                if round % 2 == 0 {
                    let _: () = redis::cmd("MSET")
                        .arg(a)
                        .arg(&v)
                        .arg(b)
                        .arg(&v)
                        .query(&mut con)
                        .unwrap();
                } else {
                    let _: () = redis::pipe()
                        .atomic()
                        .set(a, &v)
                        .set(b, &v)
                        .query(&mut con)
                        .unwrap();
                }
            }
            0
        }));
    }
    for reader in 0..3 {
        let mut con = server.client();
        let pairs = pairs.clone();
        threads.push(thread::spawn(move || {
            let mut rng = Rng(100 + reader);
            let mut reads = 0;
            for round in 0..ROUNDS {
                let (a, b) = &pairs[rng.below(pairs.len() as u64) as usize];
                let (x, y): (Option<String>, Option<String>) = if round % 2 == 0 {
                    redis::cmd("MGET").arg(a).arg(b).query(&mut con).unwrap()
                } else {
                    redis::pipe()
                        .atomic()
                        .get(a)
                        .get(b)
                        .query(&mut con)
                        .unwrap()
                };
                assert_eq!(x, y, "{a} and {b} seen from different writes");
                reads += 1;
            }
            reads
        }));
    }
    let reads: usize = threads
        .into_iter()
        .map(|t| t.join().expect("no torn read"))
        .sum();
    assert_eq!(reads, 3 * ROUNDS);
}

/// Pipelines of multi-key commands across shards (which the server runs together,
/// locking only their keys): each stays atomic for everyone else, each sees what the
/// requests before it in its pipeline did, and `DBSIZE` (which needs whole shards)
/// never counts half of an `MSET` or a `DEL`.
#[test]
fn pipelined_multi_key_commands_stay_atomic_and_in_order() {
    let server = Server::start(None);
    // Writers write the shared pairs and each has private pairs to check its own
    // pipeline's order on. Every key is set and deleted with its partner, so the
    // number of keys is always even.
    let pairs = cross_shard_pairs(24);
    let shared = Arc::new(pairs[..8].to_vec());
    const ROUNDS: usize = 400;
    let mut threads = Vec::new();
    for writer in 0..2usize {
        let mut con = server.client();
        let shared = shared.clone();
        let private = pairs[8 + writer * 8..16 + writer * 8].to_vec();
        threads.push(thread::spawn(move || {
            let mut rng = Rng(writer as u64 + 1);
            for round in 0..ROUNDS {
                let (a, b) = &shared[rng.below(shared.len() as u64) as usize];
                let (c, d) = &private[rng.below(private.len() as u64) as usize];
                let v = format!("w{writer}-{round}");
                let mut pipe = redis::pipe();
                pipe.cmd("MSET").arg(a).arg(&v).arg(b).arg(&v);
                pipe.cmd("MSET").arg(c).arg(&v).arg(d).arg(&v);
                pipe.cmd("MGET").arg(c).arg(d);
                pipe.cmd("GET").arg(d);
                pipe.cmd("DEL").arg(c).arg(d);
                pipe.cmd("EXISTS").arg(c).arg(d);
                if round % 3 == 0 {
                    pipe.cmd("DEL").arg(a).arg(b);
                }
                let replies: Vec<Value> = pipe.query(&mut con).unwrap();
                let text = |v: &Value| redis::from_redis_value::<Option<String>>(v).unwrap();
                let both: Vec<Option<String>> = redis::from_redis_value(&replies[2]).unwrap();
                assert_eq!(
                    both,
                    vec![Some(v.clone()), Some(v.clone())],
                    "MGET after MSET"
                );
                assert_eq!(text(&replies[3]), Some(v.clone()), "GET after MSET");
                assert_eq!(replies[4], Value::Int(2), "DEL of the two keys just set");
                assert_eq!(replies[5], Value::Int(0), "EXISTS after DEL");
            }
        }));
    }
    for reader in 0..2u64 {
        let mut con = server.client();
        let shared = shared.clone();
        threads.push(thread::spawn(move || {
            let mut rng = Rng(100 + reader);
            for _ in 0..ROUNDS {
                let mut pipe = redis::pipe();
                for _ in 0..3 {
                    let (a, b) = &shared[rng.below(shared.len() as u64) as usize];
                    pipe.cmd("MGET").arg(a).arg(b);
                }
                pipe.cmd("DBSIZE");
                let replies: Vec<Value> = pipe.query(&mut con).unwrap();
                for reply in &replies[..3] {
                    let (x, y): (Option<String>, Option<String>) =
                        redis::from_redis_value(reply).unwrap();
                    assert_eq!(x, y, "a pair seen from different writes");
                }
                let keys: i64 = redis::from_redis_value(&replies[3]).unwrap();
                assert_eq!(keys % 2, 0, "DBSIZE counted half of a pair: {keys}");
            }
        }));
    }
    for t in threads {
        t.join().expect("no torn read, every pipeline in order");
    }
}

/// A single-key command on a key that a multi-key write in progress has written
/// waits for the write to finish: a client that overwrites `a` just after a
/// transaction wrote `vN` there, and then reads `b`, sees `vN` or later, never the
/// `b` from before it (which would put the transaction both before and after it).
/// The writer's `MULTI` blocks hold their keys for many steps between `a` and `b`,
/// and pipelined `MSET`s hold them for a round trip.
#[test]
fn single_key_commands_wait_for_a_multi_key_write_in_progress() {
    let server = Server::start(None);
    // `a` on the lower shard, so that a transaction writes it first.
    let on = |shard| {
        (0..)
            .map(|i| format!("k{i}"))
            .find(|k| shardloop::shard_index_bytes(k.as_bytes(), 2) == shard)
            .unwrap()
    };
    let (a, b) = (on(0), on(1));
    let filler = format!("{b}-filler");
    const WRITES: usize = 3000;
    let done = Arc::new(AtomicBool::new(false));
    let mut con = server.client();
    let (wa, wb, wdone) = (a.clone(), b.clone(), done.clone());
    let writer = thread::spawn(move || {
        for i in 0..WRITES {
            let mut pipe = redis::pipe();
            if i % 2 == 0 {
                pipe.atomic().set(&wa, i).ignore();
                for _ in 0..20 {
                    pipe.incr(&filler, 1).ignore();
                }
                pipe.set(&wb, i).ignore();
            } else {
                pipe.cmd("MSET").arg(&wa).arg(i).arg(&wb).arg(i).ignore();
            }
            let () = pipe.query(&mut con).unwrap();
        }
        wdone.store(true, Ordering::Release);
    });
    let mut con = server.client();
    let mut checked = 0;
    while !done.load(Ordering::Acquire) {
        let old: Option<String> = redis::cmd("SET")
            .arg(&a)
            .arg("mine")
            .arg("GET")
            .query(&mut con)
            .unwrap();
        let Some(Ok(written)) = old.map(|v| v.parse::<usize>()) else {
            continue;
        };
        let seen: Option<usize> = con.get(&b).unwrap();
        assert!(
            seen >= Some(written),
            "overwrote write {written}'s {a}, then read {b} from write {seen:?}"
        );
        checked += 1;
    }
    writer.join().unwrap();
    assert!(checked > 0, "the check ran at least once");
}

/// A pipeline keeps its order on the connection's own shard while a transaction
/// holds one of its keys: in `DEL j k` then `SET k v`, the `DEL` waits for `j`, and
/// the `SET` must wait behind it (run first, the `DEL` would delete `k` after it).
/// Another client keeps `j` locked with long `MULTI` blocks; the pipeline is sent on
/// several connections, so that some are served by the shard of `j` and `k`.
#[test]
fn a_pipeline_keeps_its_order_behind_a_locked_key() {
    let server = Server::start(None);
    let on = |shard, skip: usize| {
        (0..)
            .map(|i| format!("o{i}"))
            .filter(|k| shardloop::shard_index_bytes(k.as_bytes(), 2) == shard)
            .nth(skip)
            .unwrap()
    };
    let (j, k, far) = (on(0, 0), on(0, 1), on(1, 0));
    let done = Arc::new(AtomicBool::new(false));
    let mut con = server.client();
    let (hj, hdone) = (j.clone(), done.clone());
    let holder = thread::spawn(move || {
        while !hdone.load(Ordering::Acquire) {
            let mut pipe = redis::pipe();
            pipe.atomic().set(&hj, "held").ignore();
            for _ in 0..50 {
                pipe.incr(&far, 1).ignore();
            }
            let () = pipe.query(&mut con).unwrap();
        }
    });
    for c in 0..8 {
        let mut con = server.client();
        for round in 0..60 {
            let v = format!("c{c}-{round}");
            let mut pipe = redis::pipe();
            pipe.cmd("DEL").arg(&j).arg(&k).ignore();
            pipe.set(&k, &v).ignore();
            let () = pipe.query(&mut con).unwrap();
            let got: Option<String> = con.get(&k).unwrap();
            assert_eq!(
                got,
                Some(v),
                "the SET after the DEL in one pipeline ran first"
            );
        }
    }
    done.store(true, Ordering::Release);
    holder.join().unwrap();
}

/// MULTI/EXEC/DISCARD as Redis answers them, over keys of both shards.
#[test]
fn multi_exec_and_discard() {
    let server = Server::start(None);
    let mut con = server.client();
    let (a, b) = cross_shard_pairs(1).remove(0);
    let ok: String = redis::cmd("MULTI").query(&mut con).unwrap();
    assert_eq!(ok, "OK");
    for cmd in [
        redis::cmd("SET").arg(&a).arg("1").clone(),
        redis::cmd("INCR").arg(&a).clone(),
        redis::cmd("RENAME").arg(&a).arg(&b).clone(),
        redis::cmd("GET").arg(&b).clone(),
    ] {
        let queued: String = cmd.query(&mut con).unwrap();
        assert_eq!(queued, "QUEUED");
    }
    let replies: Vec<Value> = redis::cmd("EXEC").query(&mut con).unwrap();
    assert_eq!(
        replies,
        vec![
            Value::Okay,
            Value::Int(2),
            Value::Okay,
            Value::BulkString(b"2".to_vec())
        ]
    );
    // A command that does not parse inside MULTI discards the whole block.
    let _: String = redis::cmd("MULTI").query(&mut con).unwrap();
    let _: String = redis::cmd("SET")
        .arg(&a)
        .arg("lost")
        .query(&mut con)
        .unwrap();
    let err = redis::cmd("GET").query::<Value>(&mut con).unwrap_err();
    assert!(
        err.to_string().contains("wrong number of arguments"),
        "{err}"
    );
    let err = redis::cmd("EXEC").query::<Value>(&mut con).unwrap_err();
    assert!(err.to_string().contains("Transaction discarded"), "{err}");
    let exists: i64 = redis::cmd("EXISTS").arg(&a).query(&mut con).unwrap();
    assert_eq!(exists, 0);
    // DISCARD drops the queue; EXEC and DISCARD need a MULTI.
    let _: String = redis::cmd("MULTI").query(&mut con).unwrap();
    let _: String = redis::cmd("SET")
        .arg(&a)
        .arg("dropped")
        .query(&mut con)
        .unwrap();
    let ok: String = redis::cmd("DISCARD").query(&mut con).unwrap();
    assert_eq!(ok, "OK");
    let exists: i64 = redis::cmd("EXISTS").arg(&a).query(&mut con).unwrap();
    assert_eq!(exists, 0);
    let err = redis::cmd("EXEC").query::<Value>(&mut con).unwrap_err();
    assert!(err.to_string().contains("EXEC without MULTI"), "{err}");
    let err = redis::cmd("DISCARD").query::<Value>(&mut con).unwrap_err();
    assert!(err.to_string().contains("DISCARD without MULTI"), "{err}");
    // Cross-shard MSETNX and RENAMENX.
    let set: i64 = redis::cmd("MSETNX")
        .arg(&a)
        .arg("x")
        .arg(&b)
        .arg("y")
        .query(&mut con)
        .unwrap();
    assert_eq!(set, 0, "{b} exists");
    let renamed: i64 = redis::cmd("RENAMENX")
        .arg(&b)
        .arg(&a)
        .query(&mut con)
        .unwrap();
    assert_eq!(renamed, 1);
    let moved: Option<String> = redis::cmd("GET").arg(&a).query(&mut con).unwrap();
    assert_eq!(moved.as_deref(), Some("2"));
    let err = redis::cmd("RENAME")
        .arg(&b)
        .arg(&a)
        .query::<Value>(&mut con)
        .unwrap_err();
    assert!(err.to_string().contains("no such key"), "{err}");
}

/// WATCH: an EXEC runs only if no watched key was written since, by anyone; UNWATCH
/// and DISCARD forget the keys.
#[test]
fn watch_aborts_exec_after_a_write() {
    let server = Server::start(None);
    let mut con = server.client();
    let mut other = server.client();
    let (a, b) = cross_shard_pairs(1).remove(0);
    let _: () = redis::cmd("SET").arg(&a).arg("1").query(&mut con).unwrap();
    // Not written meanwhile: EXEC runs.
    let _: String = redis::cmd("WATCH").arg(&a).arg(&b).query(&mut con).unwrap();
    let _: String = redis::cmd("MULTI").query(&mut con).unwrap();
    let _: String = redis::cmd("INCR").arg(&a).query(&mut con).unwrap();
    let ran: Value = redis::cmd("EXEC").query(&mut con).unwrap();
    assert_eq!(ran, Value::Array(vec![Value::Int(2)]));
    // Another client writes a watched key (on the other shard): EXEC gives nil.
    for (name, write) in [
        ("SET", redis::cmd("SET").arg(&b).arg("x").clone()),
        ("DEL", redis::cmd("DEL").arg(&b).clone()),
        ("RPUSH", redis::cmd("RPUSH").arg(&b).arg("x").clone()),
    ] {
        let _: String = redis::cmd("WATCH").arg(&a).arg(&b).query(&mut con).unwrap();
        let _: Value = write.query(&mut other).unwrap();
        let _: String = redis::cmd("MULTI").query(&mut con).unwrap();
        let _: String = redis::cmd("INCR").arg(&a).query(&mut con).unwrap();
        let aborted: Value = redis::cmd("EXEC").query(&mut con).unwrap();
        assert_eq!(aborted, Value::Nil, "after {name}");
    }
    let a_now: i64 = redis::cmd("GET").arg(&a).query(&mut con).unwrap();
    assert_eq!(a_now, 2, "the aborted blocks did not run");
    // UNWATCH forgets: a later write does not abort.
    let _: String = redis::cmd("WATCH").arg(&a).query(&mut con).unwrap();
    let _: String = redis::cmd("UNWATCH").query(&mut con).unwrap();
    let _: () = redis::cmd("SET")
        .arg(&a)
        .arg("5")
        .query(&mut other)
        .unwrap();
    let _: String = redis::cmd("MULTI").query(&mut con).unwrap();
    let _: String = redis::cmd("GET").arg(&a).query(&mut con).unwrap();
    let ran: Value = redis::cmd("EXEC").query(&mut con).unwrap();
    assert_eq!(ran, Value::Array(vec![Value::BulkString(b"5".to_vec())]));
    // WATCH inside MULTI is refused.
    let _: String = redis::cmd("MULTI").query(&mut con).unwrap();
    let err = redis::cmd("WATCH")
        .arg(&a)
        .query::<Value>(&mut con)
        .unwrap_err();
    assert!(err.to_string().contains("WATCH inside MULTI"), "{err}");
    let _: String = redis::cmd("DISCARD").query(&mut con).unwrap();
}

/// Requests pipelined after a WATCH, an EXEC or a cross-shard command in one read run
/// at their turn: a pipelined WATCH guards its EXEC and is gone after it, and a
/// connection command after an EXEC sees what the block did.
#[test]
fn pipelined_watch_and_exec_run_in_order() {
    let server = Server::start(None);
    let mut con = server.client();
    let (a, b) = cross_shard_pairs(1).remove(0);
    let replies: Vec<Value> = redis::pipe()
        .cmd("WATCH")
        .arg(&a)
        .cmd("MULTI")
        .cmd("INCR")
        .arg(&a)
        .cmd("EXEC")
        .cmd("MULTI")
        .cmd("CLIENT")
        .arg("SETNAME")
        .arg("after-exec")
        .cmd("EXEC")
        .cmd("CLIENT")
        .arg("GETNAME")
        .cmd("MSET")
        .arg(&a)
        .arg("10")
        .arg(&b)
        .arg("20")
        .cmd("GET")
        .arg(&a)
        .query(&mut con)
        .unwrap();
    assert_eq!(
        replies,
        vec![
            Value::Okay,
            Value::Okay,
            Value::SimpleString("QUEUED".into()),
            Value::Array(vec![Value::Int(1)]),
            Value::Okay,
            Value::SimpleString("QUEUED".into()),
            Value::Array(vec![Value::Okay]),
            Value::BulkString(b"after-exec".to_vec()),
            Value::Okay,
            Value::BulkString(b"10".to_vec()),
        ]
    );
    // The first EXEC unwatched `a`: a later block that writes it runs.
    let ran: Value = redis::pipe().atomic().incr(&a, 1).query(&mut con).unwrap();
    assert_eq!(ran, Value::Array(vec![Value::Int(11)]));
}
