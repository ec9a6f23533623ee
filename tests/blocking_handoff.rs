//! End-to-end tests of `examples/blocking_handoff.rs`: the example binary is started
//! as a real process on 127.0.0.1 and talked to with `ureq`, a real HTTP client.
//!
//! `cargo test` builds the examples before it runs integration tests, so the binary is
//! found next to this test's own executable, under `target/<profile>/examples/`; when
//! only this test was asked for, it builds the example itself.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// How long any single step may take before the test gives up (a bound against
/// hanging, not a timing assertion).
const PATIENCE: Duration = Duration::from_secs(30);

fn example_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| find_example().unwrap_or_else(build_example))
        .clone()
}

/// `examples/blocking_handoff` in an ancestor of this test's executable
/// (`target/<profile>/deps/<test>` -> `target/<profile>/examples/`).
fn find_example() -> Option<PathBuf> {
    let exe = std::env::current_exe().expect("the test knows its own path");
    exe.ancestors()
        .map(|dir| dir.join("examples").join("blocking_handoff"))
        .find(|p| p.is_file())
}

/// `cargo test --test blocking_handoff` alone does not build examples: build it with
/// the cargo that runs this test, in this test's profile.
fn build_example() -> PathBuf {
    let missing = "examples/blocking_handoff is not built: run the whole `cargo test` \
                   (which builds the examples) or `cargo build --example blocking_handoff`";
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| panic!("{missing}"));
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/<profile dir>/deps/<test>: "debug" is the dev profile.
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .and_then(|dir| dir.file_name())
        .and_then(|name| name.to_str())
        .map(|name| if name == "debug" { "dev" } else { name })
        .unwrap_or("dev")
        .to_string();
    let status = Command::new(cargo)
        .args([
            "build",
            "--example",
            "blocking_handoff",
            "--profile",
            &profile,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap_or_else(|e| panic!("{missing} (running cargo failed: {e})"));
    assert!(status.success(), "{missing} (cargo build: {status})");
    find_example().unwrap_or_else(|| panic!("{missing} (cargo built it somewhere else)"))
}

/// A running example process; killed on drop if a test failed before it exited.
struct ServerProcess {
    child: Child,
    base: String,
    agent: ureq::Agent,
}

impl ServerProcess {
    fn start(extra: &[&str]) -> ServerProcess {
        let mut child = Command::new(example_binary())
            .args(["--port", "0", "--shards", "2"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the example");
        let mut first = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut first)
            .expect("read the example's first line");
        let addr = first
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_string();
        assert!(addr.starts_with("127.0.0.1:"), "listens on {addr}");
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(PATIENCE))
            .build()
            .into();
        ServerProcess {
            child,
            base: format!("http://{addr}"),
            agent,
        }
    }

    fn get(&self, path: &str) -> (u16, String) {
        get(&self.agent, &format!("{}{path}", self.base))
    }

    fn signal(&self, sig: i32) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) with the pid of a child this test started and has not
        // reaped yet, so the pid cannot have been reused by another process.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// Waits (bounded) for the process to exit by itself.
    fn wait_exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "the server did not exit after the signal"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Polls `/stats` (bounded) until `ready` accepts its body.
    fn wait_for_stats(&self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let (status, body) = self.get("/stats");
            assert_eq!(status, 200, "{body}");
            if ready(&body) {
                return body;
            }
            assert!(start.elapsed() < PATIENCE, "never saw {what}: {body}");
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn get(agent: &ureq::Agent, url: &str) -> (u16, String) {
    let mut response = agent
        .get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .read_to_string()
        .unwrap_or_else(|e| panic!("GET {url}: reading the body: {e}"));
    (status, body)
}

/// Parses `shard=S key=K count=N`.
fn parse_work(body: &str) -> (usize, String, u64) {
    let mut shard = None;
    let mut key = None;
    let mut count = None;
    for field in body.split_whitespace() {
        match field.split_once('=') {
            Some(("shard", v)) => shard = v.parse().ok(),
            Some(("key", v)) => key = Some(v.to_string()),
            Some(("count", v)) => count = v.parse().ok(),
            _ => {}
        }
    }
    match (shard, key, count) {
        (Some(s), Some(k), Some(c)) => (s, k, c),
        _ => panic!("not a /work answer: {body:?}"),
    }
}

/// The total of `slow_cancelled=N` over all shards in a `/stats` body.
fn slow_cancelled(stats: &str) -> u64 {
    stats
        .split_whitespace()
        .filter_map(|f| f.strip_prefix("slow_cancelled="))
        .map(|n| n.parse::<u64>().expect("a count"))
        .sum()
}

/// The value of `in_flight=N` in a `/stats` body.
fn in_flight(stats: &str) -> usize {
    stats
        .split_whitespace()
        .find_map(|f| f.strip_prefix("in_flight="))
        .and_then(|n| n.parse().ok())
        .expect("an in_flight line")
}

#[test]
fn work_counts_per_key_on_the_shard_that_owns_it() {
    // A generous timeout: these answers must not be 503s on a loaded machine.
    let server = ServerProcess::start(&["--timeout-ms", "10000"]);
    let (status, body) = server.get("/");
    assert_eq!(status, 200);
    assert!(body.contains("2 shards"), "{body}");

    let (status, first) = server.get("/work?key=a");
    assert_eq!(status, 200, "{first}");
    let (status, second) = server.get("/work?key=a");
    assert_eq!(status, 200, "{second}");
    let (shard1, key1, count1) = parse_work(&first);
    let (shard2, key2, count2) = parse_work(&second);
    assert_eq!((key1.as_str(), count1), ("a", 1));
    assert_eq!((key2.as_str(), count2), ("a", 2));
    assert_eq!(shard1, shard2, "the same key stays on the same shard");

    // Routing is `Runtime::shard_for`: a 2-shard runtime here routes the same way,
    // and 20 keys land on both shards.
    let rt = shardloop::Runtime::builder().shards(2).build().unwrap();
    let mut seen = [false; 2];
    for i in 0..20 {
        let key = format!("key-{i}");
        let (status, body) = server.get(&format!("/work?key={key}"));
        assert_eq!(status, 200, "{body}");
        let (shard, got_key, count) = parse_work(&body);
        assert_eq!((got_key, count), (key.clone(), 1));
        assert_eq!(shard, rt.shard_for(key.as_str()), "shard of {key}");
        seen[shard] = true;
    }
    assert_eq!(seen, [true, true], "20 keys spread over both shards");
    rt.shutdown(Duration::from_secs(1)).unwrap();

    let (status, _) = server.get("/work");
    assert_eq!(status, 400, "a missing key is a client error");
    let (status, _) = server.get("/nowhere");
    assert_eq!(status, 404);
}

#[test]
fn a_shard_that_does_not_answer_in_time_gives_503_and_the_work_is_cancelled() {
    let server = ServerProcess::start(&["--timeout-ms", "500"]);
    let (status, body) = server.get("/slow?ms=5000");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("did not answer within 500 ms"), "{body}");

    // The handler gave up, so the shard drops the sleeping task...
    server.wait_for_stats("the slow task cancelled", |s| slow_cancelled(s) == 1);
    // ...and keeps serving.
    let (status, body) = server.get("/work?key=after-timeout");
    assert_eq!(status, 200, "{body}");
    assert_eq!(parse_work(&body).2, 1);
    // Work that fits in the timeout is answered, not cancelled.
    let (status, body) = server.get("/slow?ms=1");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("slept=1"), "{body}");
    assert_eq!(slow_cancelled(&server.get("/stats").1), 1);
}

#[test]
fn sigterm_lets_the_request_in_flight_finish_then_exits_0() {
    let mut server = ServerProcess::start(&["--timeout-ms", "10000"]);
    let url = format!("{}/slow?ms=300", server.base);
    let agent = server.agent.clone();
    let slow = thread::spawn(move || get(&agent, &url));

    // Signal only once a handler holds the slow request (the /stats request that
    // asks is the other one in flight).
    server.wait_for_stats("the slow request in flight", |s| in_flight(s) >= 2);
    server.signal(libc::SIGTERM);

    let (status, body) = slow.join().expect("the client thread");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("slept=300"), "{body}");
    let exit = server.wait_exit();
    assert!(exit.success(), "exit status {exit}");
}

#[test]
fn sigint_on_an_idle_server_exits_0() {
    let mut server = ServerProcess::start(&[]);
    let (status, _) = server.get("/work?key=x");
    assert!(status == 200 || status == 503, "status {status}");
    server.signal(libc::SIGINT);
    let exit = server.wait_exit();
    assert!(exit.success(), "exit status {exit}");
}
