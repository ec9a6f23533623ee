//! The echo server of the echo benchmark (`bench/echo_bench.sh`) on one shardloop
//! loop, in one of three styles:
//!
//! - `--mode protocol`: a [`shardloop::Protocol`] whose `data_received` writes the
//!   bytes back (callbacks, no futures on the data path; asyncio's protocol echo);
//! - `--mode task`: one task per connection reading a `TcpStream` and writing
//!   back what it read (the way `async`/`await` code writes it);
//! - `--mode owned`: the same task with owned buffers (`read_owned`,
//!   `write_all_owned`): on the proactor the kernel receives into and sends from
//!   the task's buffer, so the data path makes no system call of its own.
//!
//! ```text
//! cargo run --release --example echo_server -- --mode protocol --port 9000
//! ```

#[path = "cli/mod.rs"]
#[allow(dead_code)] // `cli::count`: these servers take no counts
mod cli;

use std::io::Write;

use futures_util::{AsyncReadExt, AsyncWriteExt};
use lexopt::prelude::*;
use shardloop::net::TcpListener;
use shardloop::{Protocol, Transport};

/// How the server echoes.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Task,
    Owned,
    Protocol,
}

struct Args {
    mode: Mode,
    port: u16,
    proactor: bool,
}

fn parse_args() -> Args {
    let options = [
        (
            "--mode task|owned|protocol".to_string(),
            "a task per connection over TcpStream (owned: with owned buffers), or a Protocol \
             (default protocol)"
                .to_string(),
        ),
        (
            "--port N".to_string(),
            "port to listen on (default 9000, 0 = any free port)".to_string(),
        ),
        cli::proactor_option("the loop"),
    ];
    let usage = cli::usage(
        "echo_server",
        "An echo server on one shardloop loop, for bench/echo_bench.sh.",
        &options,
    );
    cli::parse_or_exit("echo_server", &usage, |p| {
        let mut args = Args {
            mode: Mode::Protocol,
            port: 9000,
            proactor: false,
        };
        while let Some(arg) = p.next()? {
            match arg {
                Long("mode") => {
                    args.mode = match cli::value::<String>(p, "--mode")?.as_str() {
                        "task" => Mode::Task,
                        "owned" => Mode::Owned,
                        "protocol" => Mode::Protocol,
                        other => {
                            return Err(
                                format!("--mode: {other:?} is not task, owned or protocol").into()
                            )
                        }
                    }
                }
                Long("port") => args.port = cli::value(p, "--port")?,
                Long("proactor") => args.proactor = true,
                Short('h') | Long("help") => return Ok(None),
                _ => return Err(arg.unexpected()),
            }
        }
        Ok(Some(args))
    })
}

/// asyncio's protocol echo: what comes in goes straight back out.
struct Echo {
    transport: Option<Transport>,
}

impl Protocol for Echo {
    fn connection_made(&mut self, transport: Transport) {
        self.transport = Some(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        if let Some(t) = &self.transport {
            t.write(data);
        }
    }
}

fn announce(port: u16) -> std::io::Result<()> {
    println!("listening on 127.0.0.1:{port}");
    std::io::stdout().flush()
}

async fn serve_tasks(port: u16) -> std::io::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    announce(listener.local_addr()?.port())?;
    loop {
        let (mut conn, _) = listener.accept().await?;
        conn.set_nodelay(true)?;
        shardloop::spawn(async move {
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
        })
        .detach();
    }
}

async fn serve_owned(port: u16) -> std::io::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    announce(listener.local_addr()?.port())?;
    loop {
        let (conn, _) = listener.accept().await?;
        conn.set_nodelay(true)?;
        shardloop::spawn(async move {
            let mut buf = Vec::with_capacity(64 * 1024);
            loop {
                let (read, back) = conn.read_owned(buf).await;
                match read {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let (written, mut back) = conn.write_all_owned(back).await;
                if written.is_err() {
                    break;
                }
                back.clear();
                buf = back;
            }
        })
        .detach();
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args();
    let mut builder = shardloop::EventLoop::builder();
    if args.proactor {
        builder = builder.proactor(true);
    }
    let lp = builder.build()?;
    shardloop::set_event_loop(Some(lp.clone()));
    match args.mode {
        Mode::Task => lp.run_until_complete(serve_tasks(args.port))??,
        Mode::Owned => lp.run_until_complete(serve_owned(args.port))??,
        Mode::Protocol => {
            let server = lp.run_until_complete(
                lp.create_server(|| Echo { transport: None }, ("127.0.0.1", args.port)),
            )??;
            announce(server.local_addr()?.port())?;
            lp.run_forever()?;
        }
    }
    Ok(())
}
