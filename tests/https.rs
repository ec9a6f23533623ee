//! examples/https_server (rustls through tokio-rustls on shardloop's streams) tried
//! with curl: a certificate authority and a server certificate for `localhost` are
//! made at test time with rcgen; curl trusts that CA alone (`--cacert`), verifies the
//! server against it, negotiates HTTP/1.1 or HTTP/2 through ALPN, and refuses the
//! server when given another CA.

#[path = "support/client.rs"]
mod client;
#[path = "support/example.rs"]
mod example;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Command;

use example::Example;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// A CA, and a certificate for `localhost` (and 127.0.0.1) that it signed, with the
/// certificate's key: PEM files in a directory of the test's own.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("https-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();

        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("shardloop test CA {name}"));
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = ca_params.self_signed(&ca_key).unwrap();

        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();

        let pki = Pki {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&pki.ca, ca.pem()).unwrap();
        std::fs::write(&pki.cert, cert.pem()).unwrap();
        std::fs::write(&pki.key, key.serialize_pem()).unwrap();
        pki
    }

    fn start_server(&self, shards: usize) -> Example {
        Example::start(
            "https_server",
            &[
                "--shards",
                &shards.to_string(),
                "--cert",
                self.cert.to_str().unwrap(),
                "--key",
                self.key.to_str().unwrap(),
            ],
        )
    }
}

/// curl for `https://localhost:PORT{path}`, with `localhost` pinned to 127.0.0.1
/// (the server listens there only), trusting `ca` alone, and printing after the
/// body a line with the HTTP version and the verification result (0: verified).
fn curl(server: &Example, ca: &PathBuf, path: &str) -> Command {
    let mut cmd = Command::new("curl");
    cmd.args(["--silent", "--show-error", "--max-time", "20"])
        .arg("--cacert")
        .arg(ca)
        .arg("--resolve")
        .arg(format!("localhost:{}:127.0.0.1", server.port))
        .args([
            "--write-out",
            "\n%{http_code} %{http_version} %{ssl_verify_result}",
        ])
        .arg(format!("https://localhost:{}{path}", server.port));
    cmd
}

/// The body, then the status, HTTP version and verification result.
fn split_report(out: &str) -> (&str, &str) {
    out.rsplit_once('\n')
        .unwrap_or_else(|| panic!("no report line: {out:?}"))
}

#[test]
fn curl_verifies_the_server_and_speaks_http1_and_http2_with_every_shard() {
    let pki = Pki::new("ok");
    let server = pki.start_server(2);
    let mut seen = [false; 2];
    // A new curl, so a new connection, each time: the kernel spreads them over the
    // shards' listeners (missing one shard in 32 tries: chance 2^-31).
    for i in 0..32 {
        let (flag, version, debug_version) = if i % 2 == 0 {
            ("--http1.1", "1.1", "HTTP/1.1")
        } else {
            ("--http2", "2", "HTTP/2.0")
        };
        let out = client::run_ok(curl(&server, &pki.ca, "/").arg(flag));
        let (body, report) = split_report(&out);
        assert_eq!(report, format!("200 {version} 0"), "{out:?}");
        let shard: usize = body
            .strip_prefix("hello from shard ")
            .and_then(|rest| rest.strip_suffix(&format!(" over {debug_version}\n")))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected body: {body:?}"));
        seen[shard] = true;
    }
    assert_eq!(seen, [true, true], "both shards served");

    let out = client::run_ok(&mut curl(&server, &pki.ca, "/nope"));
    assert_eq!(split_report(&out), ("not found\n", "404 2 0"), "{out:?}");
    assert!(server.terminate().success());
}

#[test]
fn curl_refuses_a_server_its_ca_did_not_sign_and_plain_http_is_turned_away() {
    let pki = Pki::new("server");
    let stranger = Pki::new("stranger");
    let server = pki.start_server(1);

    // Another CA: the server's certificate does not verify (curl's exit code 60).
    let out = client::run(&mut curl(&server, &stranger.ca, "/"));
    assert_eq!(out.status.code(), Some(60), "{out:?}");

    // Plain HTTP on the TLS port: the handshake fails and the connection closes.
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    plain
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut reply = Vec::new();
    match plain.read_to_end(&mut reply) {
        Ok(_) => assert!(!reply.starts_with(b"HTTP/"), "{reply:?}"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }

    // The server goes on: the right CA still verifies it.
    let out = client::run_ok(curl(&server, &pki.ca, "/").arg("--http1.1"));
    assert_eq!(
        split_report(&out),
        ("hello from shard 0 over HTTP/1.1\n", "200 1.1 0")
    );
    assert!(server.terminate().success());
}
