//! The tokio peer of `echo_server` for the echo benchmark (`bench/echo_bench.sh`):
//! tokio's current-thread runtime (one thread, like one shardloop loop), one task
//! per connection reading a `TcpStream` and writing back what it read.
//!
//! ```text
//! cargo run --release --example echo_server_tokio -- --port 9001
//! ```

#[path = "cli/mod.rs"]
#[allow(dead_code)] // `cli::count`: these servers take no counts
mod cli;

use std::io::Write;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port = cli::port_only(
        "echo_server_tokio",
        "An echo server on tokio's current-thread runtime, for bench/echo_bench.sh.",
        9001,
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(port))?;
    Ok(())
}

async fn serve(port: u16) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on 127.0.0.1:{}", listener.local_addr()?.port());
    std::io::stdout().flush()?;
    loop {
        let (mut conn, _) = listener.accept().await?;
        conn.set_nodelay(true)?;
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if conn.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
}
