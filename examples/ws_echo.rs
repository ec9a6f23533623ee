//! A WebSocket echo server on every shard: tokio-tungstenite over shardloop's
//! `TcpStream` (cargo feature `tokio-io`: tokio's io traits, no tokio runtime). Text
//! and binary messages come back as they came; tungstenite itself answers pings and
//! completes the closing handshake. The handshake's response names the shard that
//! took the connection in an `x-shard` header.
//!
//! ```text
//! cargo run --release --features tokio-io --example ws_echo -- --port 9001
//! python3 -m websockets ws://127.0.0.1:9001/
//! ```
//!
//! Messages over 1 MiB are refused with close code 1009 ("message too big").
//! SIGINT or SIGTERM stops it.

#[path = "shard_common/mod.rs"]
mod common;

use std::net::Shutdown;
use std::time::Duration;

use futures_util::{AsyncReadExt, SinkExt, StreamExt};
use shardloop::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::WebSocketStream;

/// A client gets this long to finish its opening handshake (and a refused one to
/// close).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest message (and frame) a client may send: what one connection may make
/// the server buffer.
const MAX_MESSAGE: usize = 1 << 20;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (args, []) = common::Args::parse("ws_echo", []);
    common::serve(&args, "websocket echo", echo)
}

async fn echo(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let shard = common::shard();
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    // The signature is tungstenite's `Callback`, error type included.
    #[allow(clippy::result_large_err)]
    let name_the_shard = move |_: &Request, mut resp: Response| {
        resp.headers_mut()
            .insert("x-shard", HeaderValue::from(shard));
        Ok(resp)
    };
    let handshake =
        tokio_tungstenite::accept_hdr_async_with_config(stream, name_the_shard, Some(config));
    let mut ws = match shardloop::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => return eprintln!("shard {shard}: websocket handshake: {e}"),
        Err(_) => return eprintln!("shard {shard}: websocket handshake timed out"),
    };
    // Ends when the client closes (after tungstenite has sent the close reply, on
    // the read that follows the client's close frame) or the connection fails.
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(msg @ (Message::Text(_) | Message::Binary(_))) => {
                if ws.send(msg).await.is_err() {
                    return;
                }
            }
            // Pings, pongs and the client's close: tungstenite handles them.
            Ok(_) => {}
            Err(Error::Capacity(e)) => return refuse(ws, e.to_string()).await,
            Err(_) => return,
        }
    }
}

/// Closes with 1009 ("message too big"). The rest of the oversized message may still
/// be on its way: the stream can no longer be parsed, but it must be read, since a
/// socket closed with unread bytes sends a reset, which can destroy the close frame
/// before the client reads it. So: the close frame, then a half-close (the server
/// closes the TCP connection first, as RFC 6455 asks), then the client's bytes read
/// and dropped until it closes too (bounded in time).
async fn refuse(mut ws: WebSocketStream<TcpStream>, reason: String) {
    let close = CloseFrame {
        code: CloseCode::Size,
        reason: reason.into(),
    };
    if ws.close(Some(close)).await.is_err() {
        return;
    }
    let stream = ws.get_mut();
    if stream.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let mut scratch = vec![0u8; 64 * 1024];
    let drain = async { while let Ok(1..) = stream.read(&mut scratch).await {} };
    let _ = shardloop::time::timeout(HANDSHAKE_TIMEOUT, drain).await;
}
