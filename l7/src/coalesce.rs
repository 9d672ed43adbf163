//! Write coalescing for h2 client connections.
//!
//! hyper's h2 server flushes its connection each time it has written frames, and with one
//! upstream exchange per stream the responses of a busy connection become ready one at a time:
//! one TLS record and one `writev` per response, where HAProxy sends the responses that are
//! ready together in one `send`. [`Coalesced`] sits between hyper and the TLS stream: writes
//! are kept in a buffer, and a flush first yields once (`tokio::task::yield_now`: the task
//! runs again after the runtime's current turn and its next look at the I/O driver), so the
//! other streams whose upstreams answered meanwhile add their frames before the buffer goes
//! out as one write. An idle connection pays one
//! extra poll per flush; under load several responses share one TLS record and one syscall.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes kept before a write goes out without waiting for the flush.
const MAX_BUFFERED: usize = 64 * 1024;

/// Buffer capacity kept between flushes; a larger one (after a big burst) is freed, so idle
/// connections do not each hold up to `MAX_BUFFERED`.
const KEEP_CAPACITY: usize = 16 * 1024;

/// Runtime turns a flush waits at most for more frames.
const MAX_YIELDS: u8 = 4;

/// An `AsyncWrite` that batches writes until a flush, and yields once before flushing.
#[derive(Debug)]
pub struct Coalesced<S> {
    inner: S,
    buf: Vec<u8>,
    /// Bytes of `buf` already written to `inner`.
    written: usize,
    /// Turns the current flush has yielded for.
    yields: u8,
    /// Bytes waiting at the last yield.
    seen: usize,
}

impl<S> Coalesced<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Coalesced {
            inner,
            buf: Vec::new(),
            written: 0,
            yields: 0,
            seen: 0,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncWrite + Unpin> Coalesced<S> {
    /// Writes the whole buffer to the inner stream.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let rest = self.buf.get(self.written..).unwrap_or_default();
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, rest))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// Makes room for `len` more bytes: drains the buffer when they would not fit.
    fn poll_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<()>> {
        if self.buf.len() + len > MAX_BUFFERED {
            ready!(self.poll_drain(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesced<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesced<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_room(cx, data.len()))?;
        if data.len() >= MAX_BUFFERED {
            // The buffer is empty now: a large write goes straight through.
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        this.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        ready!(this.poll_room(cx, len))?;
        if len >= MAX_BUFFERED {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        for b in bufs {
            this.buf.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Let the runtime finish its turn first (the tasks already queued, and the events its
        // next poll of the I/O driver finds): tokio wakes a yielded task only after that, so
        // the other streams' frames join this write. Again while each turn added frames (a
        // response takes a few hops between tasks), up to MAX_YIELDS turns.
        let pending = this.buf.len() - this.written;
        if pending > 0 && this.yields < MAX_YIELDS && pending > this.seen {
            this.yields += 1;
            this.seen = pending;
            let yielded = std::pin::pin!(tokio::task::yield_now()).poll(cx);
            if yielded.is_pending() {
                return Poll::Pending;
            }
        }
        ready!(this.poll_drain(cx))?;
        this.yields = 0;
        this.seen = 0;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::AsyncWriteExt;

    /// Counts the writes that reach it; accepts at most `chunk` bytes per write.
    struct Sink {
        data: Vec<u8>,
        writes: usize,
        chunk: usize,
    }

    impl AsyncWrite for Sink {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = data.len().min(self.chunk);
            self.data.extend_from_slice(&data[..n]);
            self.writes += 1;
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn sink(chunk: usize) -> Coalesced<Sink> {
        Coalesced::new(Sink {
            data: Vec::new(),
            writes: 0,
            chunk,
        })
    }

    #[tokio::test]
    async fn writes_before_a_flush_go_out_together_after_the_runtime_turns() {
        let mut c = sink(usize::MAX);
        for frame in [&b"HEADERS"[..], b"DATA", b"HEADERS2", b"DATA2"] {
            c.write_all(frame).await.unwrap();
        }
        assert_eq!(c.get_ref().writes, 0, "nothing written before the flush");
        let wakes = Arc::new(AtomicUsize::new(0));
        let waker = waker_counting(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        // The flush yields; the wake comes once the runtime has finished its turn.
        assert!(Pin::new(&mut c).poll_flush(&mut cx).is_pending());
        tokio::task::yield_now().await;
        assert_eq!(
            wakes.load(Ordering::SeqCst),
            1,
            "woken after the runtime's turn"
        );
        // Frames written meanwhile: another turn.
        c.write_all(b"LATE").await.unwrap();
        assert!(Pin::new(&mut c).poll_flush(&mut cx).is_pending());
        // A turn that added nothing: out it goes, in one write.
        assert!(Pin::new(&mut c).poll_flush(&mut cx).is_ready());
        assert_eq!(c.get_ref().writes, 1);
        assert_eq!(c.get_ref().data, b"HEADERSDATAHEADERS2DATA2LATE");
        // An empty flush does not yield.
        assert!(Pin::new(&mut c).poll_flush(&mut cx).is_ready());
        assert_eq!(c.get_ref().writes, 1);
    }

    #[tokio::test]
    async fn a_flush_waits_at_most_max_yields_turns() {
        let mut c = sink(usize::MAX);
        let waker = waker_counting(Arc::new(AtomicUsize::new(0)));
        let mut cx = Context::from_waker(&waker);
        let mut polls = 0;
        loop {
            c.write_all(b"frame").await.unwrap();
            polls += 1;
            if Pin::new(&mut c).poll_flush(&mut cx).is_ready() {
                break;
            }
            assert!(
                polls <= usize::from(MAX_YIELDS),
                "still waiting after {polls} turns"
            );
        }
        assert_eq!(polls, usize::from(MAX_YIELDS) + 1);
        assert_eq!(c.get_ref().writes, 1);
    }

    #[tokio::test]
    async fn partial_writes_large_writes_and_shutdown_lose_nothing() {
        let mut c = sink(1000);
        let big = vec![7u8; MAX_BUFFERED + 10];
        c.write_all(b"small").await.unwrap();
        // Would overflow the buffer: the buffer goes out first, then the large write directly.
        c.write_all(&big).await.unwrap();
        c.write_all(b"tail").await.unwrap();
        poll_fn(|cx| Pin::new(&mut c).poll_shutdown(cx))
            .await
            .unwrap();
        let mut want = b"small".to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(b"tail");
        assert_eq!(c.get_ref().data, want);
    }

    #[tokio::test]
    async fn a_burst_buffer_is_not_kept_by_an_idle_connection() {
        let mut c = sink(usize::MAX);
        for _ in 0..40 {
            c.write_all(&[1u8; 1000]).await.unwrap();
        }
        assert!(c.buf.capacity() > KEEP_CAPACITY);
        c.flush().await.unwrap();
        assert_eq!(c.get_ref().data.len(), 40_000);
        assert!(c.buf.capacity() <= KEEP_CAPACITY, "{}", c.buf.capacity());
    }

    fn waker_counting(n: Arc<AtomicUsize>) -> std::task::Waker {
        struct W(Arc<AtomicUsize>);
        impl std::task::Wake for W {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
            fn wake_by_ref(self: &Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        std::task::Waker::from(Arc::new(W(n)))
    }
}
