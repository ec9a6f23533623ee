//! The monoio peer of `echo_server` for the echo benchmark (`bench/echo_bench.sh`):
//! monoio's io_uring runtime on one thread (a thread-per-core runtime with
//! completion-based I/O, the proactor's model), one task per connection receiving
//! into an owned buffer and sending it back, the way monoio's own echo example does.
//!
//! ```text
//! cargo run --release --example echo_server_monoio -- --port 9002
//! ```

#[path = "cli/mod.rs"]
#[allow(dead_code)] // `cli::count`: these servers take no counts
mod cli;

#[cfg(target_os = "linux")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
    use std::io::Write;

    let port = cli::port_only(
        "echo_server_monoio",
        "An echo server on monoio's io_uring runtime, for bench/echo_bench.sh.",
        9002,
    );
    let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .enable_timer()
        .build()?;
    rt.block_on(async move {
        let listener = monoio::net::TcpListener::bind(("127.0.0.1", port))?;
        println!("listening on 127.0.0.1:{}", listener.local_addr()?.port());
        std::io::stdout().flush()?;
        loop {
            let (mut conn, _) = listener.accept().await?;
            conn.set_nodelay(true)?;
            monoio::spawn(async move {
                let mut buf = Vec::with_capacity(64 * 1024);
                loop {
                    let (read, b) = conn.read(buf).await;
                    buf = b;
                    match read {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let (written, b) = conn.write_all(buf).await;
                    buf = b;
                    if written.is_err() {
                        break;
                    }
                    buf.clear();
                }
            });
        }
        #[allow(unreachable_code)]
        std::io::Result::Ok(())
    })?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("echo_server_monoio: io_uring is Linux only");
}
