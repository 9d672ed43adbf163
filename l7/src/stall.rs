//! A client connection whose writes may not stall forever: [`WriteStall`].
//!
//! A client that stops reading (a dead or malicious peer, or one that is just stuck) fills its
//! receive window, then the socket's send buffer, and every write to it waits. Without a bound,
//! the response, its upstream exchange and the connection are held until TCP gives up, which
//! may be never while the peer keeps acknowledging with a zero window. vip-l7 bounds it the way
//! nginx's `send_timeout` and HAProxy's `timeout client` do: a write or flush that makes no
//! progress for the listener's `idle_timeout` fails with `TimedOut`, and the connection ends.
//!
//! It wraps the accepted TCP stream, below TLS, so it covers every client connection: vip-l7's
//! own HTTP/1.1 path, hyper's HTTP/1.1 and h2 servers, and WebSocket tunnels after an upgrade.
//! Writes that complete at once (the socket has room) read no clock and arm no timer.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// `io` whose writes and flushes fail with `TimedOut` after making no progress for `wait`.
#[derive(Debug)]
pub struct WriteStall<IO> {
    io: IO,
    wait: Duration,
    /// Armed when a write first finds no room; kept (and reset) for later stalls.
    timer: Option<Pin<Box<Sleep>>>,
    /// A write or flush returned `Pending` and none has completed since.
    stalled: bool,
}

impl<IO> WriteStall<IO> {
    /// `io`, with writes bounded by `wait` without progress.
    pub fn new(io: IO, wait: Duration) -> WriteStall<IO> {
        WriteStall {
            io,
            wait,
            timer: None,
            stalled: false,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// Passes a completed step through; on `Pending`, starts the stall clock if it is not
    /// running yet and fails once it has run out.
    fn check<T>(&mut self, cx: &mut Context<'_>, step: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if step.is_ready() {
            self.stalled = false;
            return step;
        }
        if !self.stalled {
            self.stalled = true;
            let deadline = Instant::now() + self.wait;
            match &mut self.timer {
                Some(t) => t.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        match self.timer.as_mut().map(|t| t.as_mut().poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took none of a write for the idle timeout",
            ))),
            _ => Poll::Pending,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for WriteStall<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for WriteStall<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let step = Pin::new(&mut this.io).poll_write(cx, buf);
        this.check(cx, step)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let step = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.check(cx, step)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let step = Pin::new(&mut this.io).poll_flush(cx);
        this.check(cx, step)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Writes into a pipe nobody reads stall, and fail after `wait`; once the reader takes
    /// some, writes go on, and a reader that keeps taking a little keeps a long write alive.
    #[tokio::test]
    async fn a_write_without_progress_fails_after_the_wait() {
        let wait = Duration::from_millis(300);
        let (a, mut b) = tokio::io::duplex(1024);
        let mut w = WriteStall::new(a, wait);
        w.write_all(&[0u8; 1024]).await.unwrap();
        let t = std::time::Instant::now();
        let e = w.write_all(&[1u8; 10]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(
            t.elapsed() >= wait && t.elapsed() < 10 * wait,
            "{:?}",
            t.elapsed()
        );

        // Progress clears the stall: the reader drains, the next write succeeds at once.
        let mut got = vec![0u8; 1024];
        b.read_exact(&mut got).await.unwrap();
        w.write_all(&[2u8; 1024]).await.unwrap();
        // A reader that takes 512 bytes every 200 ms: the 2 KiB write takes about 800 ms,
        // longer than `wait`, but never waits `wait` without progress.
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            for _ in 0..6 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                b.read_exact(&mut buf).await.unwrap();
            }
            b
        });
        let t = std::time::Instant::now();
        w.write_all(&[3u8; 2048]).await.unwrap();
        assert!(t.elapsed() > wait, "{:?}", t.elapsed());
        let _b = reader.await.unwrap();
    }
}
