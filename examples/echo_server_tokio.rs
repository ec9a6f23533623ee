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

use lexopt::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn parse_port() -> u16 {
    let options = [(
        "--port N".to_string(),
        "port to listen on (default 9001, 0 = any free port)".to_string(),
    )];
    let usage = cli::usage(
        "echo_server_tokio",
        "An echo server on tokio's current-thread runtime, for bench/echo_bench.sh.",
        &options,
    );
    cli::parse_or_exit("echo_server_tokio", &usage, |p| {
        let mut port = 9001;
        while let Some(arg) = p.next()? {
            match arg {
                Long("port") => port = cli::value(p, "--port")?,
                Short('h') | Long("help") => return Ok(None),
                _ => return Err(arg.unexpected()),
            }
        }
        Ok(Some(port))
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port = parse_port();
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
