//! The `tokio-io` feature: tokio's io traits on shardloop's streams, driven by
//! shardloop loops with no tokio runtime anywhere (each test checks there is none):
//! tokio-util's codecs, tokio's io helpers (`copy`, `BufReader`, `read_buf` into
//! uninitialized memory, vectored writes), owned halves, `&TcpStream` and a child
//! process's pipes.

use std::io::IoSlice;

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use shardloop::net::{TcpListener, TcpStream, UnixStream};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_util::codec::{Framed, LinesCodec};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Runs `fut` on a fresh shardloop loop of this thread, checking first that no
/// tokio runtime is around to help.
fn run<T>(fut: impl std::future::Future<Output = Result<T>>) -> T {
    shardloop::run(async {
        assert!(tokio::runtime::Handle::try_current().is_err());
        fut.await
    })
    .expect("the loop ran")
    .expect("the test body succeeded")
}

/// A connected pair of TCP streams on 127.0.0.1.
async fn tcp_pair() -> Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let client = TcpStream::connect(listener.local_addr()?).await?;
    let (server, _) = listener.accept().await?;
    Ok((client, server))
}

#[test]
fn tokio_util_lines_codec_round_trips_over_tcp() {
    let replies = run(async {
        let (client, server) = tcp_pair().await?;
        // The server answers each line in upper case, until the client hangs up.
        let echo = shardloop::spawn(async move {
            let mut lines = Framed::new(server, LinesCodec::new_with_max_length(1024));
            while let Some(line) = lines.next().await {
                lines.send(line?.to_uppercase()).await?;
            }
            Ok::<_, tokio_util::codec::LinesCodecError>(())
        });
        let mut lines = Framed::new(client, LinesCodec::new());
        let mut replies = Vec::new();
        for word in ["one", "two", "three"] {
            lines.send(word).await?;
            replies.push(lines.next().await.expect("a reply")?);
        }
        // Closing the sink shuts the stream down (`poll_shutdown`): the server reads
        // end-of-stream.
        SinkExt::<&str>::close(&mut lines).await?;
        echo.await??;
        Ok(replies)
    });
    assert_eq!(replies, ["ONE", "TWO", "THREE"]);
}

#[test]
fn tokio_copy_echoes_through_owned_halves_until_the_half_close() {
    let back = run(async {
        let (client, server) = tcp_pair().await?;
        let echo = shardloop::spawn(async move {
            let (mut rd, mut wr) = server.split();
            tokio::io::copy(&mut rd, &mut wr).await
        });
        let (mut rd, mut wr) = client.split();
        let sent: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        // Written from another task while this one reads: neither side's buffer
        // can fill up and block the other.
        let payload = sent.clone();
        let writer = shardloop::spawn(async move {
            wr.write_all(&payload).await?;
            wr.shutdown().await
        });
        let mut back = Vec::new();
        rd.read_to_end(&mut back).await?;
        writer.await??;
        assert_eq!(echo.await??, sent.len() as u64);
        assert!(back == sent, "{} bytes back of {}", back.len(), sent.len());
        Ok(back.len())
    });
    assert_eq!(back, 200_000);
}

#[test]
fn read_buf_fills_uninitialized_spare_capacity() {
    let got = run(async {
        let (mut client, mut server) = tcp_pair().await?;
        client.write_all(b"into spare capacity").await?;
        // The inherent `TcpStream::shutdown(how)` shadows `AsyncWriteExt::shutdown`.
        AsyncWriteExt::shutdown(&mut client).await?;
        // `BytesMut` spare capacity is uninitialized: tokio hands it to `poll_read`
        // as an uninitialized `ReadBuf`.
        let mut buf = BytesMut::with_capacity(64);
        while server.read_buf(&mut buf).await? > 0 {}
        Ok(buf)
    });
    assert_eq!(&got[..], b"into spare capacity");
}

#[test]
fn vectored_writes_and_shared_references_work_on_tcp() {
    let got = run(async {
        let (client, server) = tcp_pair().await?;
        assert!(tokio::io::AsyncWrite::is_write_vectored(&client));
        let slices = [IoSlice::new(b"vec"), IoSlice::new(b"tored")];
        // Through `&TcpStream`, as two tasks sharing one stream would.
        let n = (&client).write_vectored(&slices).await?;
        assert_eq!(n, 8, "a small vectored write goes out whole");
        AsyncWriteExt::shutdown(&mut &client).await?;
        let mut got = String::new();
        (&server).read_to_string(&mut got).await?;
        Ok(got)
    });
    assert_eq!(got, "vectored");
}

#[test]
fn buf_reader_gives_unix_streams_async_buf_read() {
    let lines = run(async {
        let (mut a, b) = UnixStream::pair()?;
        a.write_all(b"first line\nsecond line\nno newline").await?;
        AsyncWriteExt::shutdown(&mut a).await?;
        let mut reader = BufReader::new(b);
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).await? == 0 {
                break;
            }
            lines.push(line);
        }
        Ok(lines)
    });
    assert_eq!(lines, ["first line\n", "second line\n", "no newline"]);
}

#[test]
fn child_pipes_work_with_tokio_io_helpers() {
    let (lines, status) = run(async {
        let mut child = shardloop::process::Command::new("cat")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        stdin.write_all(b"first\nsecond\n").await?;
        // poll_shutdown closes the pipe: cat reads end-of-file and exits.
        AsyncWriteExt::shutdown(&mut stdin).await?;
        let mut lines = Vec::new();
        let mut reader = BufReader::new(stdout).lines();
        while let Some(line) = reader.next_line().await? {
            lines.push(line);
        }
        Ok((lines, child.wait().await?))
    });
    assert_eq!(lines, ["first", "second"]);
    assert!(status.success());
}
