//! examples/ws_echo (tokio-tungstenite on shardloop's `TcpStream`) tried with
//! Python's `websockets` package (tests/support/ws_client.py): text, binary and
//! fragmented messages echoed, a ping answered, the closing handshake completed, a
//! message over the limit refused with close code 1009, on every shard.

#[path = "support/client.rs"]
mod client;
#[path = "support/example.rs"]
mod example;

use std::collections::HashMap;
use std::process::Command;

use example::Example;

const CONNECTIONS: usize = 32;

#[test]
fn python_websockets_gets_its_frames_echoed_by_every_shard() {
    let server = Example::start("ws_echo", &["--shards", "2"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/ws_client.py");
    let out = client::run_ok(
        Command::new("python3")
            .arg(script)
            .arg(server.port.to_string())
            .arg(CONNECTIONS.to_string())
            .env("PYTHONIOENCODING", "utf-8"),
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), CONNECTIONS + 1, "{out}");

    // Each connection a new one: the kernel spreads them over the shards' listeners
    // (missing one shard in 32 tries: chance 2^-31).
    let mut seen = [false; 2];
    for line in &lines[..CONNECTIONS] {
        let fields: HashMap<&str, &str> = line
            .split(' ')
            .filter_map(|field| field.split_once('='))
            .collect();
        assert_eq!(fields["text"], "héllo-wörld", "{line}");
        assert_eq!(fields["fragmented"], "fragmented", "{line}");
        assert!(fields["binary_back"].starts_with("bytes:"), "{line}");
        assert_eq!(fields["binary_back"], fields["binary_sent"], "{line}");
        assert_eq!(fields["pong"], "yes", "{line}");
        assert_eq!(fields["close"], "1000", "a clean close: {line}");
        let shard: usize = fields["shard"].parse().expect("a shard number");
        seen[shard] = true;
    }
    assert_eq!(seen, [true, true], "both shards served");
    assert_eq!(lines[CONNECTIONS], "refused=1009", "message too big");
    assert!(server.terminate().success());
}
