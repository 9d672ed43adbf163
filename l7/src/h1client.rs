//! vip-l7's own HTTP/1.1 client towards upstreams: the I/O shell around [`crate::h1codec`].
//!
//! A request is written and its response head read by the request's own task, and the response
//! body is read by whoever polls it (the client connection's task): no connection task, no
//! channels between tasks. This path serves every HTTP/1.1 upstream request whose body is
//! already in memory (no body, or one buffered by the proxy) and that does not ask for a protocol
//! upgrade; the others (streamed bodies, WebSocket) take hyper's client.
//!
//! A connection goes back to its pool only after a complete response that allows keep-alive and
//! with nothing unread behind it; on checkout a pooled connection that has become readable
//! (closed by the upstream, or unexpected bytes) is dropped, at no syscall when it has not.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, StatusCode};
use hyper::body::{Frame, SizeHint};
use tokio::io::AsyncWriteExt;

use crate::h1codec::{self, Chunk, ChunkedDecoder, CodecError, Framing};
use crate::upstream::Conn;

/// Room a read asks for at first, and after short reads.
const READ_CHUNK: usize = 8 * 1024;
/// Most room a read asks for: reads that fill the room double it up to this (large bodies).
const MAX_READ_CHUNK: usize = 256 * 1024;

/// An idle or busy upstream connection.
pub struct H1Conn {
    io: Conn,
    /// Bytes read and not yet consumed.
    buf: BytesMut,
    /// The request being written (kept to reuse its allocation).
    wbuf: Vec<u8>,
    /// Room the next read asks for: grows while reads fill it, shrinks after short ones.
    read_size: usize,
    /// The response field names this upstream sent last, for the next head's parse.
    names: h1codec::NameCache,
}

/// What went wrong on an own-client request.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    /// Writing the request failed: the upstream cannot have a complete request.
    #[error("upstream connection failed while sending the request: {0}")]
    Write(io::Error),
    /// Reading the response failed, or the connection ended before a complete head.
    #[error("upstream connection failed before a response: {0}")]
    Read(io::Error),
    /// The response is not valid HTTP/1.1.
    #[error("upstream sent an invalid response: {0}")]
    Response(#[from] CodecError),
}

/// A response head, and the connection its body is read from.
pub struct Response {
    /// Status, version and header fields.
    pub head: h1codec::ResponseHead,
    /// The body, reading from the connection.
    pub body: H1Body,
}

impl H1Conn {
    /// Wraps a connected (and, for TLS upstreams, handshaken) stream. Boxed: a connection moves
    /// between the pool, the request and its body, and a pointer moves cheaply.
    pub fn new(io: Conn) -> Box<H1Conn> {
        Box::new(H1Conn {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: Vec::with_capacity(1024),
            read_size: READ_CHUNK,
            names: h1codec::NameCache::default(),
        })
    }

    /// Whether this idle connection may carry a request: not closed by the upstream, and nothing
    /// unread. Costs no syscall while the reactor has seen nothing on the socket.
    pub fn is_reusable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        matches!(self.poll_fill(&mut cx), Poll::Pending)
    }

    /// Reads what is available into `buf`: `Ok(0)` at end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < self.read_size / 4 {
            self.buf.reserve(self.read_size);
        }
        let room = self.buf.capacity() - self.buf.len();
        let n = std::task::ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.io),
            cx,
            &mut self.buf
        ))?;
        if n == room {
            self.read_size = (self.read_size * 2).min(MAX_READ_CHUNK);
        } else if n < self.read_size / 4 {
            self.read_size = (self.read_size / 2).max(READ_CHUNK);
        }
        Poll::Ready(Ok(n))
    }

    /// Drops buffers grown by a large response before the connection idles in the pool.
    pub fn shrink(&mut self) {
        if self.buf.capacity() > 4 * READ_CHUNK {
            self.buf = BytesMut::with_capacity(READ_CHUNK);
        }
        self.read_size = READ_CHUNK;
    }

    async fn fill(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }

    /// Sends a request (`target` in origin form, `body` complete) and reads the final response
    /// head; 1xx heads before it are skipped. The body is then read through [`Response::body`].
    pub async fn send(
        mut self: Box<Self>,
        method: &Method,
        target: &str,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<Response, H1Error> {
        self.wbuf.clear();
        h1codec::encode_request_head(&mut self.wbuf, method, target, headers, body.len() as u64);
        self.wbuf.extend_from_slice(body);
        // The flush matters for TLS: rustls may hold records the socket did not take yet.
        let written = async {
            self.io.write_all(&self.wbuf).await?;
            self.io.flush().await
        };
        written.await.map_err(H1Error::Write)?;
        if self.wbuf.capacity() > 16 * 1024 {
            self.wbuf = Vec::with_capacity(1024); // do not keep a large body's buffer
        }
        let head_request = method == Method::HEAD;
        // A head that trickles in is parsed again only once its end may have arrived.
        let mut gate = h1codec::HeadGate::default();
        loop {
            // Nothing to parse yet (the usual case right after the write): read first. Over
            // MAX_HEAD bytes, the parse reports the head as too large.
            let parsed = if gate.worth_parsing(&self.buf, h1codec::MAX_HEAD + 1) {
                h1codec::parse_response_head(&mut self.buf, head_request, &mut self.names)?
            } else {
                None
            };
            match parsed {
                Some(head)
                    if head.status.is_informational()
                        && head.status != StatusCode::SWITCHING_PROTOCOLS =>
                {
                    gate.reset();
                    continue;
                }
                Some(head) => {
                    let body = H1Body::new(self, head.framing, head.keep_alive);
                    return Ok(Response { head, body });
                }
                None => {
                    gate.incomplete(self.buf.len());
                    if self.fill().await.map_err(H1Error::Read)? == 0 {
                        return Err(H1Error::Read(io::ErrorKind::UnexpectedEof.into()));
                    }
                }
            }
        }
    }
}

enum BodyState {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

/// A response body read from its connection. Once it has ended cleanly on a keep-alive
/// connection with nothing unread behind it, [`H1Body::take_reusable`] hands the connection back;
/// a body dropped early closes it.
pub struct H1Body {
    conn: Option<Box<H1Conn>>,
    state: BodyState,
    keep_alive: bool,
    reusable: Option<Box<H1Conn>>,
}

impl std::fmt::Debug for H1Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Body")
            .field("keep_alive", &self.keep_alive)
            .finish()
    }
}

/// One step of [`H1Body::poll_frame`], decided while the connection is borrowed.
enum Step {
    Data(Bytes, bool),
    Trailers(HeaderMap),
    End,
    Fail(H1Error),
    Read,
}

impl H1Body {
    fn new(conn: Box<H1Conn>, framing: Framing, keep_alive: bool) -> H1Body {
        let state = match framing {
            Framing::Empty => BodyState::Done,
            Framing::Length(n) => BodyState::Length(n),
            Framing::Chunked => BodyState::Chunked(ChunkedDecoder::default()),
            Framing::UntilClose => BodyState::UntilClose,
        };
        let mut body = H1Body {
            conn: Some(conn),
            state,
            keep_alive,
            reusable: None,
        };
        if body.is_end_stream() {
            body.finish();
        }
        body
    }

    /// The connection, once the body has ended cleanly and it may carry another request.
    pub fn take_reusable(&mut self) -> Option<Box<H1Conn>> {
        self.reusable.take()
    }

    /// Whether the whole body has been read.
    pub fn is_end_stream(&self) -> bool {
        matches!(self.state, BodyState::Done)
    }

    /// What is known of the body's length.
    pub fn size_hint(&self) -> SizeHint {
        match self.state {
            BodyState::Done => SizeHint::with_exact(0),
            BodyState::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }

    fn finish(&mut self) {
        self.state = BodyState::Done;
        if let Some(conn) = self.conn.take() {
            if self.keep_alive && conn.buf.is_empty() {
                self.reusable = Some(conn);
            }
        }
    }

    fn fail(&mut self) {
        self.state = BodyState::Done;
        self.conn = None;
    }

    /// The next body frame, reading from the connection as needed.
    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let step = match &mut self.state {
                BodyState::Done => Step::End,
                BodyState::Length(left) if !conn.buf.is_empty() => {
                    let n = (*left).min(conn.buf.len() as u64) as usize;
                    *left -= n as u64;
                    Step::Data(conn.buf.split_to(n).freeze(), *left == 0)
                }
                BodyState::Length(_) => Step::Read,
                BodyState::Chunked(dec) => match dec.decode(&mut conn.buf) {
                    Ok(Chunk::Data(d)) => Step::Data(d, false),
                    Ok(Chunk::Trailers(t)) => Step::Trailers(t),
                    Ok(Chunk::End) => Step::End,
                    Ok(Chunk::NeedMore) => Step::Read,
                    Err(e) => Step::Fail(e.into()),
                },
                BodyState::UntilClose if !conn.buf.is_empty() => {
                    Step::Data(conn.buf.split().freeze(), false)
                }
                BodyState::UntilClose => Step::Read,
            };
            match step {
                Step::Data(d, last) => {
                    if last {
                        self.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(d))));
                }
                Step::Trailers(t) => {
                    // Trailers end a chunked body (the decoder is done), and whoever polls
                    // this body may stop at them.
                    self.finish();
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
                Step::End => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Step::Fail(e) => {
                    self.fail();
                    return Poll::Ready(Some(Err(e)));
                }
                Step::Read => {}
            }
            // Nothing more of the body is buffered: read.
            match conn.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) if matches!(self.state, BodyState::UntilClose) => {
                    self.fail(); // the end of a close-delimited body; not reusable
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) => {
                    self.fail();
                    let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
                    return Poll::Ready(Some(Err(H1Error::Read(eof))));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    self.fail();
                    return Poll::Ready(Some(Err(H1Error::Read(e))));
                }
            }
        }
    }
}
