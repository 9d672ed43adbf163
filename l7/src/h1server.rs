//! vip-l7's own HTTP/1.1 server path, the I/O shell around [`crate::h1codec`]'s request parser
//! and response encoder.
//!
//! It serves the common request, a plain one without a body or with a small body that came whole
//! with its head, on a plain or TLS connection that did not negotiate h2: read the request, hand
//! it to [`proxy::handle`], write the response (head and body in one write when the body is at
//! hand). Any other request (a body still arriving, chunked or over 64 KiB, an upgrade, `Expect`,
//! CONNECT, the HTTP/2 preface, anything malformed or over a limit) ends this path: the bytes
//! read so far and the connection go to hyper's server ([`Outcome::HandOver`]), which serves the
//! rest of the connection exactly as it serves every connection, errors (400, 431) included.
//!
//! hyper's server connection task is most of what vip-l7 spends per HTTP/1.1 request around the
//! proxying itself (`docs/benchmarks.md`, "L7 with vip-l7's own HTTP/1.1 server path").
//!
//! Timeouts match hyper's as vip-l7 configures it: the next request head must arrive within the
//! listener's `header_read_timeout` (and `idle_timeout`, which is the same wait here) of the end
//! of the previous response; a listener stop closes the connection between requests. Writes to
//! a client that stops reading are bounded below this path, by [`crate::stall::WriteStall`].

use std::cell::RefCell;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Version};
use hyper::body::Body;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use crate::h1codec::{self, BodyFraming, HeadGate, ParsedRequest, RequestHead, ResponseTo};
use crate::proxy::{self, ConnInfo, Shared};
use crate::upstream::ProxyBody;

/// Largest request body this path takes, when it came whole with the head (the proxy buffers
/// bodies up to this size so that they can be retried).
const MAX_BODY: usize = proxy::MAX_BUFFERED_BODY as usize;
/// Room made in the read buffer before each read.
const READ_CHUNK: usize = 8 * 1024;
/// Response bytes gathered before a write; larger body chunks are written as they come.
const MAX_WRITE_BUFFER: usize = 64 * 1024;
/// Buffer capacity a connection keeps between requests; more (after a large head or response)
/// is given back, so idle keep-alive connections stay small.
const KEEP_BUFFER: usize = 16 * 1024;

/// How [`serve`] ended.
#[derive(Debug)]
pub enum Outcome {
    /// The connection is done (the client closed it or asked to, a timeout, a listener stop, an
    /// I/O error, or a response that could not be completed).
    Closed,
    /// A request this path does not serve: hyper's server continues the connection from these
    /// bytes (the start of that request, and anything after it already read).
    HandOver(Bytes),
}

/// Serves plain HTTP/1.1 requests on `io` until the connection ends or a request needs hyper.
pub async fn serve<IO>(
    io: &mut IO,
    shared: &Arc<Shared>,
    info: &Arc<ConnInfo>,
    stop: &mut watch::Receiver<bool>,
) -> Outcome
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let listener = &info.listener;
    let wait = listener.header_read_timeout.min(listener.idle_timeout);
    let mut conn = Conn {
        io,
        shared,
        info,
        buf: BytesMut::new(),
        out: Vec::new(),
        // hyper's read buffer limit as vip-l7 configures it (`server::http_builder`): a head
        // that does not fit is handed over, and hyper answers 431.
        max_head: listener.max_header_bytes.max(8192),
        names: h1codec::NameCache::default(),
    };
    // One timer per connection, moved only when it fires early (see `expire`), not per request.
    let mut timer = Box::pin(tokio::time::sleep(wait));
    loop {
        let deadline = Instant::now() + wait;
        let mut gate = HeadGate::default();
        let head = loop {
            if gate.worth_parsing(&conn.buf, conn.max_head) {
                match h1codec::parse_request_head(
                    &mut conn.buf,
                    conn.max_head,
                    MAX_BODY,
                    &mut conn.names,
                ) {
                    ParsedRequest::Head(h) => break h,
                    ParsedRequest::HandOver => return Outcome::HandOver(conn.buf.freeze()),
                    ParsedRequest::Partial => gate.incomplete(conn.buf.len()),
                }
            }
            let read = tokio::select! {
                biased;
                r = conn.read() => r,
                _ = stop.changed() => return Outcome::Closed,
                _ = expire(&mut timer, deadline) => return Outcome::Closed,
            };
            if !read {
                return Outcome::Closed;
            }
        };
        if !conn.respond(head, stop).await || *stop.borrow() {
            break;
        }
        if conn.out.capacity() > KEEP_BUFFER {
            conn.out = Vec::new();
        }
        if conn.buf.is_empty() && conn.buf.capacity() > KEEP_BUFFER {
            conn.buf = BytesMut::new();
        }
    }
    // The response is out; FIN (TLS: close_notify), bounded like any wait for the client.
    let _ = tokio::time::timeout(wait, conn.io.shutdown()).await;
    Outcome::Closed
}

/// Returns once `deadline` has passed. `timer` may be set earlier than `deadline` (an older
/// deadline); then it is moved on, so a connection's requests do not each reset it.
async fn expire(timer: &mut Pin<Box<Sleep>>, deadline: Instant) {
    loop {
        timer.as_mut().await;
        if Instant::now() >= deadline {
            return;
        }
        timer.as_mut().reset(deadline);
    }
}

/// One client connection on this path.
struct Conn<'a, IO> {
    io: &'a mut IO,
    shared: &'a Arc<Shared>,
    info: &'a Arc<ConnInfo>,
    /// Read from the client, not yet parsed.
    buf: BytesMut,
    /// Response bytes not yet written.
    out: Vec<u8>,
    /// Largest request head.
    max_head: usize,
    /// The request field names this client sent last, for the next head's parse.
    names: h1codec::NameCache,
}

impl<IO> Conn<'_, IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    /// Reads more from the client; false at EOF or on an error.
    async fn read(&mut self) -> bool {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 2 {
            self.buf.reserve(READ_CHUNK);
        }
        matches!(self.io.read_buf(&mut self.buf).await, Ok(n) if n > 0)
    }

    /// Proxies one request and writes its response. Returns whether the connection may carry
    /// the next request (not if `stop` is set by the time the response is ready).
    async fn respond(&mut self, head: RequestHead, stop: &watch::Receiver<bool>) -> bool {
        let head_request = head.method == Method::HEAD;
        let http11 = head.version == Version::HTTP_11;
        let keep_alive = head.keep_alive;
        let mut req = Request::new(proxy::ReqBody::Read(head.body));
        *req.method_mut() = head.method;
        *req.uri_mut() = head.uri;
        *req.version_mut() = head.version;
        *req.headers_mut() = head.headers;
        let mut handling = std::pin::pin!(proxy::handle_request(
            self.shared.clone(),
            self.info.clone(),
            req
        ));
        // While the request is in flight, reading on finds a client that went away (EOF, as
        // hyper does): the request is dropped, which cancels it upstream. Pipelined requests
        // are kept, up to a head's worth.
        let resp = loop {
            tokio::select! {
                biased;
                r = &mut handling => break r,
                more = self.read(), if self.buf.len() < self.max_head => {
                    if !more {
                        return false;
                    }
                }
            }
        };
        let resp = match resp {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let (parts, mut body) = resp.into_parts();
        let to = ResponseTo {
            head_request,
            http11,
            // A stopping listener: this is the connection's last response.
            keep_alive: keep_alive && !*stop.borrow(),
        };
        self.out.clear();
        let (framing, keep_alive) = with_date(|date| {
            h1codec::encode_response_head(
                &mut self.out,
                parts.status,
                &parts.headers,
                body.size_hint().exact(),
                to,
                date,
            )
        });
        drop(parts);
        let complete = match framing {
            BodyFraming::None => Ok(true),
            _ => self.send_body(&mut body, framing).await,
        };
        drop(body);
        matches!(complete, Ok(true)) && self.flush().await.is_ok() && keep_alive
    }

    /// Writes out `out`.
    async fn flush(&mut self) -> std::io::Result<()> {
        self.io.write_all(&self.out).await?;
        self.out.clear();
        self.io.flush().await
    }

    /// Writes the body after the head already in `out`, framed as `framing`. `out` is written
    /// out before waiting for more of the body and when it would grow past
    /// [`MAX_WRITE_BUFFER`]; what is left in it is the caller's to write. `Ok(false)`: the body
    /// failed or did not match its Content-Length, so the client cannot tell where it ends and
    /// the connection must close.
    async fn send_body(
        &mut self,
        body: &mut ProxyBody,
        framing: BodyFraming,
    ) -> std::io::Result<bool> {
        let mut left = match framing {
            BodyFraming::Length(n) => n,
            _ => u64::MAX,
        };
        loop {
            // Whatever the body has now goes into `out`; before waiting for more, `out` goes out.
            let now = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx)));
            let frame = match now.await {
                Poll::Ready(f) => f,
                Poll::Pending => {
                    self.flush().await?;
                    std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
                }
            };
            let data = match frame {
                None => break,
                Some(Err(_)) => return Ok(false),
                // Trailers are not sent to HTTP/1.1 clients (hyper's server drops them too).
                Some(Ok(f)) => match f.into_data() {
                    Ok(d) => d,
                    Err(_) => continue,
                },
            };
            if data.is_empty() {
                continue;
            }
            let len = data.len() as u64;
            match framing {
                BodyFraming::Length(_) if len > left => return Ok(false),
                BodyFraming::Length(_) => left -= len,
                BodyFraming::Chunked => h1codec::encode_chunk_size(&mut self.out, data.len()),
                _ => {}
            }
            if self.out.len() + data.len() <= MAX_WRITE_BUFFER {
                self.out.extend_from_slice(&data);
            } else {
                self.io.write_all(&self.out).await?;
                self.out.clear();
                self.io.write_all(&data).await?;
            }
            if framing == BodyFraming::Chunked {
                self.out.extend_from_slice(b"\r\n");
            }
        }
        Ok(match framing {
            BodyFraming::Length(_) => left == 0,
            BodyFraming::Chunked => {
                self.out.extend_from_slice(h1codec::LAST_CHUNK);
                true
            }
            _ => true,
        })
    }
}

/// Calls `f` with the current time as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`),
/// formatted once per second per thread.
fn with_date<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs {
            *d = (secs, httpdate::fmt_http_date(now));
        }
        f(d.1.as_bytes())
    })
}

/// A connection whose first bytes were already read from it: they are read again first. This is
/// how hyper's server takes a connection over ([`Outcome::HandOver`]).
#[derive(Debug)]
pub struct Prefixed<IO> {
    prefix: Bytes,
    io: IO,
}

impl<IO> Prefixed<IO> {
    /// `io`, whose reads return `prefix` first.
    pub fn new(prefix: Bytes, io: IO) -> Prefixed<IO> {
        Prefixed { prefix, io }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.is_empty() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let n = this.prefix.len().min(buf.remaining());
        buf.put_slice(&this.prefix.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
