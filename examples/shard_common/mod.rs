//! What the ecosystem examples share (`https_server`, `axum_server`, `ws_echo`): the
//! command line (parsed by `cli`, as every example's is), and the server around their connection handlers: one
//! `SO_REUSEPORT` listener per shard on 127.0.0.1, one task per connection, and a
//! clean exit on SIGINT or SIGTERM.

use std::cell::RefCell;
use std::error::Error;
use std::future::Future;
use std::io::Write;
use std::time::Duration;

use shardloop::net::{TcpListener, TcpStream};
use shardloop::{Runtime, Task};

/// How long connections still open at SIGINT/SIGTERM get to finish.
const GRACE: Duration = Duration::from_secs(5);

/// A shard gives up accepting after this many failed accepts in a row. Running out
/// of descriptors is not one of them (`accept` waits that out itself), nor is a
/// connection that died in the backlog: what is left means the listener is broken,
/// and retrying it forever would only spin.
const MAX_ACCEPT_ERRORS: u32 = 100;

#[path = "../cli/mod.rs"]
mod cli;

use lexopt::prelude::*;

/// `--port N` (default 8080; 0 picks a free one) and `--shards N` (default: the number
/// of CPUs).
pub struct Args {
    pub port: u16,
    pub shards: usize,
}

impl Args {
    /// Parses the command line of `program` (`--port`, `--shards`, and `extra`: flags
    /// with a value that it requires, given back in that order), or exits as every
    /// example does (see `cli`).
    pub fn parse<const N: usize>(program: &str, extra: [&str; N]) -> (Args, [String; N]) {
        parse_with("shards", num_cpus::get(), program, extra)
    }
}

/// [`Args::parse`], with the thread-count flag named `threads_flag` (`workers` for a
/// tokio peer of an example) and its default.
pub fn parse_with<const N: usize>(
    threads_flag: &str,
    default_threads: usize,
    program: &str,
    extra: [&str; N],
) -> (Args, [String; N]) {
    let threads_option = format!("--{threads_flag}");
    let mut options = cli::server_options(threads_flag, default_threads);
    for name in extra {
        options.push((format!("{name} FILE"), "required".to_string()));
    }
    let about = format!("{program}, on 127.0.0.1.");
    let usage = cli::usage(program, &about, &options);
    cli::parse_or_exit(program, &usage, |p| {
        let mut args = Args {
            port: 8080,
            shards: default_threads,
        };
        let mut values: [Option<String>; N] = std::array::from_fn(|_| None);
        while let Some(arg) = p.next()? {
            match arg {
                Long("port") => args.port = cli::value(p, "--port")?,
                Long(f) if f == threads_flag => args.shards = cli::count(p, &threads_option)?,
                Long(f) if extra.iter().any(|e| e.trim_start_matches("--") == f) => {
                    let name = format!("--{f}");
                    let i = extra
                        .iter()
                        .position(|e| *e == name)
                        .expect("matched above");
                    values[i] = Some(cli::value(p, &name)?);
                }
                Short('h') | Long("help") => return Ok(None),
                _ => return Err(arg.unexpected()),
            }
        }
        let mut missing = extra.iter().zip(&values).filter(|(_, v)| v.is_none());
        if let Some((name, _)) = missing.next() {
            return Err(format!("{name} is required").into());
        }
        Ok(Some((args, values.map(|v| v.expect("checked above")))))
    })
}

/// The shard running this code.
pub fn shard() -> usize {
    shardloop::current_shard().expect("runs on a shard")
}

thread_local! {
    /// This shard's accept loop, cancelled at shutdown (which closes its listener).
    static ACCEPTING: RefCell<Option<Task<()>>> = const { RefCell::new(None) };
}

/// Serves on every shard until SIGINT or SIGTERM, then stops accepting, gives open
/// connections [`GRACE`] to finish and exits. Each accepted connection runs
/// `handler` as a task of its own on the shard that accepted it (so its future may
/// be `!Send`). Prints `listening on 127.0.0.1:PORT (N shards, WHAT)` once every
/// shard listens.
pub fn serve<H, F>(args: &Args, what: &str, handler: H) -> Result<(), Box<dyn Error>>
where
    H: Fn(TcpStream) -> F + Clone + Send + 'static,
    F: Future<Output = ()> + 'static,
{
    let rt = Runtime::builder().shards(args.shards).build()?;
    // Shard 0 binds first: with `--port 0` its port is the one the others share.
    let (first, port) = (handler.clone(), args.port);
    let port = rt.submit_to(0, move || listen(port, first)).wait()??;
    for i in 1..rt.len() {
        let handler = handler.clone();
        rt.submit_to(i, move || listen(port, handler)).wait()??;
    }

    // The main thread's loop waits for the signal.
    let lp = shardloop::get_event_loop()?;
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let handle = lp.handle();
        lp.add_signal_handler(sig, move || handle.stop())?;
    }
    println!(
        "listening on 127.0.0.1:{port} ({} shards, {what})",
        rt.len()
    );
    std::io::stdout().flush()?;
    lp.run_forever()?;

    eprintln!("shutting down: no new connections, finishing open ones");
    for stopped in rt.broadcast(|_| async {
        if let Some(accepting) = ACCEPTING.with(|a| a.borrow_mut().take()) {
            accepting.cancel();
        }
    }) {
        stopped.wait()?;
    }
    let report = rt.shutdown(GRACE)?;
    eprintln!(
        "done: {} tasks finished, {} cancelled at the end of the grace period",
        report.finished(),
        report.cancelled()
    );
    Ok(())
}

/// Binds this shard's listener on `port` and starts accepting; returns the port.
async fn listen<H, F>(port: u16, handler: H) -> std::io::Result<u16>
where
    H: Fn(TcpStream) -> F + 'static,
    F: Future<Output = ()> + 'static,
{
    let listener = TcpListener::bind_reuseport(("127.0.0.1", port))?;
    let port = listener.local_addr()?.port();
    let accepting = shardloop::spawn(accept_loop(listener, handler));
    ACCEPTING.with(|a| *a.borrow_mut() = Some(accepting));
    Ok(port)
}

/// Accepts until cancelled (or until the listener is broken); one task per connection.
async fn accept_loop<H, F>(listener: TcpListener, handler: H)
where
    H: Fn(TcpStream) -> F,
    F: Future<Output = ()> + 'static,
{
    let mut errors = 0;
    while errors < MAX_ACCEPT_ERRORS {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                errors = 0;
                // Dropping the `Task` detaches it: the connection runs to its end.
                drop(shardloop::spawn(handler(stream)));
            }
            Err(e) => {
                errors += 1;
                eprintln!("shard {}: accept: {e}", shard());
            }
        }
    }
    eprintln!(
        "shard {}: {MAX_ACCEPT_ERRORS} failed accepts in a row: not accepting any more",
        shard()
    );
}
