//! An example server, run by a test: started from its binary with `--port 0`, its
//! port read from its first line of output (`listening on 127.0.0.1:PORT ...`), and
//! stopped with SIGTERM, its exit status checked.
//!
//! The binary is the one `cargo test` builds next to the test's executable
//! (target/<profile>/examples/). Cargo builds the examples when it runs every test
//! target (`cargo test --all-features`); before a run that names its test targets,
//! build the example (`cargo build --all-features --example https_server`:
//! `cargo test --example` would build it as a test harness instead).

use std::io::BufRead;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long an example may take to start listening, and to exit after SIGTERM: hang
/// detectors, never timings under test.
const BOUND: Duration = Duration::from_secs(60);

/// A running example; killed when dropped (only reached when a test failed).
pub struct Example {
    name: String,
    child: Child,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
}

impl Example {
    /// Starts example `name` with `--port 0` and `args`, and waits until it listens.
    pub fn start(name: &str, args: &[&str]) -> Example {
        let exe = std::env::current_exe().expect("the test's own path");
        let path = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("target/<profile>/deps/<test>")
            .join("examples")
            .join(name);
        assert!(
            path.exists(),
            "{} is not built: `cargo test --all-features` builds the examples; before \
             a run that names its tests, `cargo build --all-features --example {name}`",
            path.display()
        );
        let mut child = Command::new(&path)
            .args(["--port", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", path.display()));
        // Read on a thread of its own, so that an example that never gets to listen
        // fails the test instead of hanging it.
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut example = Example {
            name: name.to_string(),
            child,
            port: 0,
        };
        let line = rx
            .recv_timeout(BOUND)
            .unwrap_or_else(|_| panic!("{name} did not start listening within {BOUND:?}"));
        example.port = line
            .strip_prefix("listening on 127.0.0.1:")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{name}: unexpected first line: {line:?}"));
        example
    }

    /// Sends SIGTERM and waits for the exit status (bounded: killed past [`BOUND`]).
    pub fn terminate(mut self) -> ExitStatus {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid fits pid_t");
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let polls = BOUND.as_millis() / 50;
        for _ in 0..polls {
            if let Some(status) = self.child.try_wait().expect("waiting for the example") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{} did not exit within {BOUND:?} of SIGTERM", self.name);
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
