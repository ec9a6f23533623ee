//! examples/axum_server (an axum `Router` on every shard, served by hyper on
//! shardloop) tried with curl over HTTP/1.1 and HTTP/2 with prior knowledge, and
//! with h2load (nghttp2's HTTP/2 load generator) for many streams on a few
//! connections.

#[path = "support/client.rs"]
mod client;
#[path = "support/example.rs"]
mod example;

use std::process::Command;

use example::Example;

/// curl for `http://127.0.0.1:PORT{path}`, printing after the body a line with the
/// status and the HTTP version.
fn curl(server: &Example, path: &str) -> Command {
    let mut cmd = Command::new("curl");
    cmd.args(["--silent", "--show-error", "--max-time", "20"])
        .args(["--write-out", "\n%{http_code} %{http_version}"])
        .arg(format!("http://127.0.0.1:{}{path}", server.port));
    cmd
}

/// The body, then the status and HTTP version.
fn get(cmd: &mut Command) -> (String, String) {
    let out = client::run_ok(cmd);
    let (body, report) = out
        .rsplit_once('\n')
        .unwrap_or_else(|| panic!("no report line: {out:?}"));
    (body.to_string(), report.to_string())
}

#[test]
fn curl_gets_every_route_over_http1_from_every_shard() {
    let server = Example::start("axum_server", &["--shards", "2"]);
    let ok = |body: &str| (body.to_string(), "200 1.1".to_string());
    assert_eq!(get(&mut curl(&server, "/")), ok("Hello, World!"));
    assert_eq!(get(&mut curl(&server, "/version")), ok("HTTP/1.1"));
    assert_eq!(
        get(&mut curl(&server, "/hello/shardloop")),
        ok("hello, shardloop")
    );
    assert_eq!(
        get(curl(&server, "/echo").args(["--data-binary", "echo this back"])),
        ok("echo this back")
    );
    let (_, report) = get(&mut curl(&server, "/nope"));
    assert_eq!(report, "404 1.1");
    // A GET on a POST-only route: the router's own answer.
    let (_, report) = get(&mut curl(&server, "/echo"));
    assert_eq!(report, "405 1.1");

    // A new curl, so a new connection, each time: the kernel spreads them over the
    // shards' listeners (missing one shard in 32 tries: chance 2^-31).
    let mut seen = [false; 2];
    for _ in 0..32 {
        let (body, report) = get(&mut curl(&server, "/shard"));
        assert_eq!(report, "200 1.1");
        let shard: usize = body
            .strip_prefix("shard ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected body: {body:?}"));
        seen[shard] = true;
    }
    assert_eq!(seen, [true, true], "both shards served");
    assert!(server.terminate().success());
}

#[test]
fn curl_speaks_http2_with_prior_knowledge() {
    let server = Example::start("axum_server", &["--shards", "2"]);
    let h2 = |body: &str| (body.to_string(), "200 2".to_string());
    let prior = "--http2-prior-knowledge";
    assert_eq!(get(curl(&server, "/version").arg(prior)), h2("HTTP/2.0"));
    assert_eq!(get(curl(&server, "/hello/h2").arg(prior)), h2("hello, h2"));
    // A body larger than one HTTP/2 frame (16 KiB) and than the initial flow-control
    // window (64 KiB), in both directions.
    let big: String = (0..200_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("axum-echo-{}.txt", std::process::id()));
    std::fs::write(&file, &big).unwrap();
    let upload = format!("@{}", file.display());
    let (body, report) = get(curl(&server, "/echo")
        .arg(prior)
        .args(["--data-binary", &upload]));
    assert_eq!(report, "200 2");
    assert!(
        body == big,
        "echoed {} bytes, not the 200000 sent",
        body.len()
    );
    assert!(server.terminate().success());
}

#[test]
fn h2load_gets_every_response_over_h2c() {
    let server = Example::start("axum_server", &["--shards", "2"]);
    // 400 requests on 4 connections, up to 8 streams at once on each.
    let out = client::run_ok(
        Command::new("h2load")
            .args([
                "--requests",
                "400",
                "--clients",
                "4",
                "--max-concurrent-streams",
                "8",
            ])
            .arg(format!("http://127.0.0.1:{}/", server.port)),
    );
    assert!(out.contains("Application protocol: h2c"), "{out}");
    assert!(
        out.contains("requests: 400 total, 400 started, 400 done, 400 succeeded, 0 failed"),
        "{out}"
    );
    assert!(out.contains("status codes: 400 2xx"), "{out}");
    // Every response had the route's body: 400 times the 13 bytes of "Hello, World!".
    assert!(out.contains("(5200) data"), "{out}");
    assert!(server.terminate().success());
}
