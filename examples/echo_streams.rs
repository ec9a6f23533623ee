//! A TCP echo server on one loop, written with `shardloop::streams` (asyncio's
//! `start_server` and its reader and writer): each connection gets back what it
//! sends, read as it comes (up to 64 KiB at a time) and written back with a `drain`
//! for flow control. For the echo benchmarks, next to asyncio's own streams server.
//!
//! ```text
//! cargo run --release --example echo_streams -- --port 7000 [--proactor]
//! ```
//!
//! It prints `listening on 127.0.0.1:PORT` once it listens (`--port 0`, the
//! default, picks a free port). SIGINT or SIGTERM stops it.

#[path = "cli/mod.rs"]
mod cli;

use shardloop::streams::{self, StreamReader, StreamWriter};

/// The most one read takes from a connection's buffer.
const CHUNK: usize = 64 * 1024;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (port, proactor) = cli::port_and_proactor(
        "echo_streams",
        "A TCP echo server written with shardloop::streams, on 127.0.0.1.",
        0,
    );
    let mut builder = shardloop::EventLoop::builder();
    if proactor {
        builder = builder.proactor(true);
    }
    let lp = builder.build()?;
    shardloop::set_event_loop(Some(lp.clone()));
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let stopper = lp.clone();
        lp.add_signal_handler(sig, move || stopper.stop())?;
    }
    let server = lp.run_until_complete(streams::start_server(("127.0.0.1", port), echo))??;
    println!("listening on {}", server.local_addr());
    std::io::Write::flush(&mut std::io::stdout())?;
    lp.run_forever()?;
    server.close();
    lp.close()?;
    Ok(())
}

/// Echoes until the client closes its side (or the connection fails).
async fn echo(mut reader: StreamReader, mut writer: StreamWriter) -> Result<(), shardloop::Error> {
    loop {
        let data = reader.read(CHUNK).await?;
        if data.is_empty() {
            writer.close();
            return writer.wait_closed().await;
        }
        writer.write(&data);
        writer.drain().await?;
    }
}
