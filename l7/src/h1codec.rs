//! HTTP/1.1, sans I/O, both ways. Towards upstreams: request heads out; response heads, body
//! framing (RFC 9112 §6) and chunked bodies in. Towards clients: plain request heads in (anything
//! else is handed to hyper), response heads and chunk framing out.
//!
//! This is the core of vip-l7's own upstream HTTP/1.1 client ([`crate::h1client`]), which
//! replaces hyper's client connection task on the request path (that task, its channels and its
//! response parsing cost about a fifth of vip-l7's instructions per request; `docs/benchmarks.md`,
//! "An HTTP/1.1 upstream client of our own"), and of its server path for plain requests
//! ([`crate::h1server`]).
//!
//! Everything here works on caller-owned buffers and never blocks, allocates per byte or panics
//! on any input: bad input is a [`CodecError`] (or, from a client, a hand-over to hyper), and
//! limits bound memory ([`MAX_HEAD`], [`MAX_HEADERS`], [`MAX_CHUNK_LINE`]).

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use smallvec::SmallVec;

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Largest response head (status line and header fields) accepted, and largest trailer section.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a response head (hyper's default too).
pub const MAX_HEADERS: usize = 100;
/// Longest chunk-size line (size and extensions) accepted.
pub const MAX_CHUNK_LINE: usize = 4096;

/// Why an upstream's response cannot be read; the connection is not reusable after any of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The head did not end within [`MAX_HEAD`] bytes.
    #[error("response head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    /// More than [`MAX_HEADERS`] header fields.
    #[error("more than {MAX_HEADERS} header fields in the response")]
    TooManyHeaders,
    /// Not an HTTP/1.x response head (httparse's reason).
    #[error("malformed response head: {0}")]
    Malformed(httparse::Error),
    /// A field value that is not a valid header value.
    #[error("invalid header value in the response")]
    BadHeaderValue,
    /// Content-Length that is not a decimal number, or several that differ (RFC 9112 §6.3).
    #[error("invalid Content-Length in the response")]
    BadContentLength,
    /// A chunked body that breaks RFC 9112 §7.1.
    #[error("malformed chunked body: {0}")]
    BadChunk(&'static str),
}

/// How the response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: a response to HEAD, 1xx, 204, 304, or Content-Length: 0.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Transfer-Encoding with chunked last: see [`ChunkedDecoder`].
    Chunked,
    /// Everything until the upstream closes the connection.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    /// The status code; 1xx heads other than 101 come before the final response.
    pub status: StatusCode,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// The header fields, values sharing the head's buffer; without the fields that only
    /// describe this connection and which the fields below replace: Transfer-Encoding, Keep-Alive,
    /// and Connection when its only option is keep-alive (a Connection field naming anything else
    /// stays, for the caller's hop-by-hop handling).
    pub headers: HeaderMap,
    /// How the body that follows is delimited.
    pub framing: Framing,
    /// Whether the connection may carry another request once the body has been read.
    pub keep_alive: bool,
}

/// Parses a response head at the start of `buf`. `Ok(None)`: incomplete, read more. On success the
/// head's bytes are split off `buf`, which then starts with the body. `head_request`: the request
/// was HEAD, so the response has no body whatever its fields say.
pub fn parse_response_head(
    buf: &mut BytesMut,
    head_request: bool,
    names: &mut NameCache,
) -> Result<Option<ResponseHead>, CodecError> {
    // Uninitialised slots: initialising 100 of them costs more than parsing a typical head.
    let mut fields =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(CodecError::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(CodecError::TooManyHeaders),
        Err(e) => return Err(CodecError::Malformed(e)),
    };
    if len > MAX_HEAD {
        return Err(CodecError::HeadTooLarge);
    }
    let version = if resp.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // httparse reads exactly three digits, so the code is 100..=999 or the parse failed.
    let status = StatusCode::from_u16(resp.code.unwrap_or(0))
        .map_err(|_| CodecError::Malformed(httparse::Error::Status))?;

    // Offsets now (the fields borrow `buf`); names and values from the frozen head below.
    let mut spans = FieldSpans::new();
    field_spans(&mut spans, buf, resp.headers);
    let head = buf.split_to(len).freeze();

    let mut headers = HeaderMap::with_capacity(spans.len());
    let mut length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut chunked_last = false;
    let (mut close, mut keep_alive_token) = (false, false);
    for (i, &(name_at, name_len, value_at, value_len)) in spans.iter().enumerate() {
        let name = names
            .name(i, span(&head, name_at, name_len))
            .map_err(|_| CodecError::Malformed(httparse::Error::HeaderName))?;
        let value = span(&head, value_at, value_len);
        if name == CONTENT_LENGTH {
            for part in value.split(|&b| b == b',') {
                let n = parse_decimal(part.trim_ascii()).ok_or(CodecError::BadContentLength)?;
                if length.is_some_and(|l| l != n) {
                    return Err(CodecError::BadContentLength);
                }
                length = Some(n);
            }
        } else if name == TRANSFER_ENCODING {
            transfer_encoding = true;
            // The last coding of the last field decides (RFC 9112 §6.3, item 4).
            if let Some(last) = value.rsplit(|&b| b == b',').next() {
                chunked_last = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
            }
            // Consumed: the body reaches the caller decoded.
            continue;
        } else if name == CONNECTION {
            let mut only_keep_alive = true;
            for token in value.split(|&b| b == b',') {
                let t = token.trim_ascii();
                let ka = t.eq_ignore_ascii_case(b"keep-alive");
                close |= t.eq_ignore_ascii_case(b"close");
                keep_alive_token |= ka;
                only_keep_alive &= ka;
            }
            if only_keep_alive {
                // Consumed: it says nothing but what `keep_alive` says.
                continue;
            }
        } else if name == KEEP_ALIVE {
            // Consumed: parameters of this connection only (RFC 9112 §9.3 / RFC 2068 §19.7.1).
            continue;
        }
        headers.append(
            name,
            header_value(head.slice(value_at as usize..(value_at + value_len) as usize)),
        );
    }

    let no_body = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if no_body {
        Framing::Empty
    } else if transfer_encoding {
        if chunked_last {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else {
        match length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    let persistent = match version {
        Version::HTTP_10 => keep_alive_token && !close,
        _ => !close,
    };
    // Transfer-Encoding with Content-Length may be a smuggling attempt: read this response by
    // Transfer-Encoding, then close (RFC 9112 §6.1).
    let keep_alive = persistent
        && framing != Framing::UntilClose
        && !(transfer_encoding && length.is_some() && !no_body);

    Ok(Some(ResponseHead {
        status,
        version,
        headers,
        framing,
        keep_alive,
    }))
}

/// Where each field's name and value are in the parsed buffer: (name offset, name length,
/// value offset, value length), so that they can be sliced from the frozen head once the fields
/// no longer borrow the buffer.
/// One field's `(name_at, name_len, value_at, value_len)` in the head. `u32`: a head is at most
/// [`MAX_HEAD`] bytes (or the smaller listener limit), far below `u32::MAX`.
type FieldSpan = (u32, u32, u32, u32);
type FieldSpans = SmallVec<[FieldSpan; MAX_HEADERS]>;

/// Fills `spans` with the spans of `fields`, which httparse parsed out of `buf`. Inline storage,
/// not a Vec per head, left uninitialised until used (zeroing all MAX_HEADERS slots would cost
/// more than parsing a typical head), and filled in place: returned by value, its 1.6 KB were
/// copied twice per head.
fn field_spans(spans: &mut FieldSpans, buf: &[u8], fields: &[httparse::Header<'_>]) {
    let base = buf.as_ptr() as usize;
    let at = |s: &[u8]| (s.as_ptr() as usize - base) as u32;
    spans.extend(fields.iter().map(|f| {
        (
            at(f.name.as_bytes()),
            f.name.len() as u32,
            at(f.value),
            f.value.len() as u32,
        )
    }));
}

/// The bytes of `head` at `at..at + len` (a span from [`field_spans`]).
fn span(head: &[u8], at: u32, len: u32) -> &[u8] {
    &head[at as usize..(at + len) as usize]
}

/// Field names seen on one connection, by position in the head: a peer sends the same fields in
/// the same order and spelling head after head (an upstream's `Server`, `Date`, `Content-Type`,
/// ...), so a name whose bytes equal the last head's at that position is that name again (a
/// clone), not a new parse: `HeaderName::from_bytes` was a twentieth of the instructions of a
/// proxied HTTP/1.1 request. Keep one per connection and pass it to every parse on it.
#[derive(Debug, Default)]
pub struct NameCache {
    /// `(bytes as received, the name they parse to)` at each position seen so far.
    seen: Vec<(Box<[u8]>, HeaderName)>,
}

impl NameCache {
    /// Positions remembered; fields further on are parsed every time.
    const POSITIONS: usize = 32;
    /// Longest name remembered: however long the names a peer sends, a connection's cache stays
    /// small (32 names of at most 32 bytes) while the connection idles.
    const LONGEST: usize = 32;

    /// The name `raw` parses to, `raw` being the field name at `position` in a head.
    fn name(
        &mut self,
        position: usize,
        raw: &[u8],
    ) -> Result<HeaderName, http::header::InvalidHeaderName> {
        if let Some((bytes, name)) = self.seen.get(position) {
            if **bytes == *raw {
                return Ok(name.clone());
            }
        }
        let name = HeaderName::from_bytes(raw)?;
        if raw.len() > Self::LONGEST {
            // Not remembered.
        } else if position < self.seen.len() {
            self.seen[position] = (raw.into(), name.clone());
        } else if position == self.seen.len() && position < Self::POSITIONS {
            self.seen.push((raw.into(), name.clone()));
        }
        Ok(name)
    }
}

/// A field value httparse has accepted, sharing the head's buffer, without checking its bytes a
/// second time (that check was a thirtieth of vip-l7's instructions per proxied request).
#[allow(unsafe_code)]
fn header_value(b: Bytes) -> HeaderValue {
    // SAFETY: `HeaderValue` requires HTAB or bytes 0x20..=0xFF except DEL. httparse accepts in a
    // field value exactly HTAB, SP, VCHAR (0x21..=0x7E) and obs-text (0x80..=0xFF), and the
    // default config used here rejects obsolete line folding, so the sets are the same. Debug
    // builds check anyway (the `_unchecked` constructor validates under debug assertions), which
    // `every_value_httparse_accepts_is_a_header_value` exercises with arbitrary bytes.
    unsafe { HeaderValue::from_maybe_shared_unchecked(b) }
}

/// A Content-Length value: one or more ASCII digits, at most `u64::MAX`.
fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// Writes a request head to `out`: `METHOD target HTTP/1.1`, the fields of `headers` except
/// Content-Length and Transfer-Encoding, then `Content-Length: body_len` when there is a body or
/// the method expects one (POST, PUT, PATCH), and the empty line.
pub fn encode_request_head(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    body_len: u64,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if body_len > 0 || matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        out.extend_from_slice(b"content-length: ");
        push_decimal(out, body_len);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal, without going through `fmt`.
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// A request that vip-l7's own HTTP/1.1 server path serves ([`crate::h1server`]): a plain
/// request, without a body or with one small enough that it came whole with the head.
#[derive(Debug)]
pub struct RequestHead {
    /// The method (never CONNECT).
    pub method: Method,
    /// The target, in origin form (a path and query).
    pub uri: http::Uri,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// The header fields as sent, values sharing the head's buffer.
    pub headers: HeaderMap,
    /// Whether the client lets the connection carry another request after this one.
    pub keep_alive: bool,
    /// The body (Content-Length bytes), sharing the buffer; empty for none.
    pub body: Bytes,
}

/// What [`parse_request_head`] found at the start of the buffer.
// Returned and matched at once, once per request: boxing the head would cost an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum ParsedRequest {
    /// A plain request, its head and body split off the buffer.
    Head(RequestHead),
    /// Not complete yet: read more.
    Partial,
    /// Anything else, left in the buffer untouched: a request with a body that is chunked, over
    /// `max_body`, or not all in the buffer yet, an upgrade, `Expect`, CONNECT, a target that is
    /// not a path,
    /// the HTTP/2 preface, a malformed head, or one over `max_head` bytes or [`MAX_HEADERS`]
    /// fields. hyper's server takes the connection over from these bytes on, so every case but
    /// the common one keeps hyper's behaviour, errors (400, 431) included.
    HandOver,
}

/// Parses a request at the start of `buf`; see [`ParsedRequest`]. `max_head` bounds the head's
/// size, `max_body` the body's.
pub fn parse_request_head(
    buf: &mut BytesMut,
    max_head: usize,
    max_body: usize,
    names: &mut NameCache,
) -> ParsedRequest {
    let mut fields =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut req,
        buf,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(n)) if n <= max_head => n,
        Ok(httparse::Status::Partial) if buf.len() < max_head => return ParsedRequest::Partial,
        _ => return ParsedRequest::HandOver,
    };
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return ParsedRequest::HandOver;
    };
    if !path.starts_with('/') || method == "CONNECT" {
        return ParsedRequest::HandOver;
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return ParsedRequest::HandOver;
    };
    let version = if req.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let path_span = (path.as_ptr() as usize - buf.as_ptr() as usize, path.len());
    let mut spans = FieldSpans::new();
    field_spans(&mut spans, buf, req.headers);

    // Decide on the raw bytes first: a hand-over leaves the buffer as it was.
    let (mut close, mut keep_alive_token) = (false, false);
    let mut length: Option<usize> = None;
    for &(name_at, name_len, value_at, value_len) in &spans {
        let name = span(buf, name_at, name_len);
        let value = span(buf, value_at, value_len);
        let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
        if is(b"content-length") {
            // Digits only, in one field (hyper judges anything else, repeats included).
            match parse_decimal(value) {
                Some(n) if length.is_none() && n <= max_body as u64 => length = Some(n as usize),
                _ => return ParsedRequest::HandOver,
            }
        } else if is(b"transfer-encoding") || is(b"upgrade") || is(b"expect") {
            return ParsedRequest::HandOver;
        } else if is(b"connection") {
            for token in value.split(|&b| b == b',') {
                let t = token.trim_ascii();
                close |= t.eq_ignore_ascii_case(b"close");
                keep_alive_token |= t.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let body_len = length.unwrap_or(0);
    if buf.len() - len < body_len {
        // The body is still arriving: hyper reads it (with its own limits and timeouts).
        return ParsedRequest::HandOver;
    }
    let head = buf.split_to(len).freeze();
    match request_parts(&head, path_span, &spans, names) {
        Some((uri, headers)) => {
            let keep_alive = match version {
                Version::HTTP_10 => keep_alive_token && !close,
                _ => !close,
            };
            ParsedRequest::Head(RequestHead {
                method,
                uri,
                version,
                headers,
                keep_alive,
                body: buf.split_to(body_len).freeze(),
            })
        }
        None => {
            // A target or field name httparse accepts and `http` does not (rare): put the head
            // back for hyper.
            let mut whole = BytesMut::with_capacity(head.len() + buf.len());
            whole.extend_from_slice(&head);
            whole.extend_from_slice(buf);
            *buf = whole;
            ParsedRequest::HandOver
        }
    }
}

/// Whether a head that arrives piece by piece is worth parsing again. Heads are parsed from
/// their start, so parsing after every read would cost work quadratic in a trickled head's size;
/// with the gate, a head is parsed on the first piece (garbage is found at once) and then only
/// once its end may have arrived. Used by the server path for request heads and by the upstream
/// client for response heads.
#[derive(Debug, Default)]
pub struct HeadGate {
    /// Bytes at the start of the buffer known to hold no end of a head (0: parse on sight).
    scanned: usize,
}

impl HeadGate {
    /// Whether parsing `buf` can find more than the last parse did: a first look, `buf` has
    /// reached `limit` (the parse then reports the head as too large), or an empty line may
    /// have arrived since.
    pub fn worth_parsing(&self, buf: &[u8], limit: usize) -> bool {
        !buf.is_empty()
            && (self.scanned == 0 || buf.len() >= limit || may_end_head(buf, self.scanned))
    }

    /// The last parse found no complete head in these `len` bytes.
    pub fn incomplete(&mut self, len: usize) {
        self.scanned = len;
    }

    /// A head was parsed: the next one is looked at afresh.
    pub fn reset(&mut self) {
        self.scanned = 0;
    }
}

/// Whether `buf` may hold the end of a head (an empty line: LF LF or LF CR LF) that ends at or
/// after `from`: the bytes before `from` are known to hold none.
fn may_end_head(buf: &[u8], from: usize) -> bool {
    let tail = &buf[from.saturating_sub(2).min(buf.len())..];
    tail.iter().enumerate().any(|(i, &b)| {
        b == b'\n' && (tail.get(i + 1) == Some(&b'\n') || tail.get(i + 1..i + 3) == Some(b"\r\n"))
    })
}

/// The target and header fields of a request head, sharing its bytes.
fn request_parts(
    head: &Bytes,
    (path_at, path_len): (usize, usize),
    spans: &[FieldSpan],
    names: &mut NameCache,
) -> Option<(http::Uri, HeaderMap)> {
    let uri = http::Uri::from_maybe_shared(head.slice(path_at..path_at + path_len)).ok()?;
    // Room for the fields the proxy adds (X-Forwarded-For, -Proto, -Host, X-Request-Id): growing
    // the map on the request path would rehash it.
    let mut headers = HeaderMap::with_capacity(spans.len() + 4);
    for (i, &(name_at, name_len, value_at, value_len)) in spans.iter().enumerate() {
        let name = names.name(i, span(head, name_at, name_len)).ok()?;
        headers.append(
            name,
            header_value(head.slice(value_at as usize..(value_at + value_len) as usize)),
        );
    }
    Some((uri, headers))
}

/// How a response body is sent to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body bytes: a response to HEAD, 1xx, 204 or 304.
    None,
    /// Exactly this many bytes (Content-Length).
    Length(u64),
    /// Chunked (an HTTP/1.1 client, a body of unknown length).
    Chunked,
    /// Until the connection closes (an HTTP/1.0 client, a body of unknown length).
    UntilClose,
}

/// What the client's request decides about the response.
#[derive(Debug, Clone, Copy)]
pub struct ResponseTo {
    /// The request was HEAD: no body, whatever the fields say.
    pub head_request: bool,
    /// The client speaks HTTP/1.1 (chunked bodies; persistent unless it said close).
    pub http11: bool,
    /// The connection may carry another request after this response.
    pub keep_alive: bool,
}

/// Writes a response head for a client to `out`: the status line, the fields of `headers` except
/// those about the connection or the framing (Connection, Keep-Alive, Transfer-Encoding, and a
/// Content-Length that is invalid, conflicting, or on a 1xx or 204), then what this end decides:
/// Content-Length (`body_len`, when the fields have none) or chunked, Date when missing
/// (`date`, an IMF-fixdate), and Connection. Returns the body's framing and whether the connection
/// stays open after the response.
pub fn encode_response_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    body_len: Option<u64>,
    to: ResponseTo,
    date: &[u8],
) -> (BodyFraming, bool) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let no_body = status.is_informational() || status == StatusCode::NO_CONTENT;
    let mut length: Option<u64> = None;
    let mut has_date = false;
    for (name, value) in headers {
        if name == CONNECTION || name == TRANSFER_ENCODING || name == KEEP_ALIVE {
            continue;
        }
        if name == CONTENT_LENGTH {
            match parse_decimal(value.as_bytes()) {
                Some(n) if !no_body && length.is_none() => length = Some(n),
                _ => continue,
            }
        } else if name == DATE {
            has_date = true;
        }
        push_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    let framing = if no_body || status == StatusCode::NOT_MODIFIED || to.head_request {
        BodyFraming::None
    } else if let Some(n) = length {
        BodyFraming::Length(n)
    } else if let Some(n) = body_len {
        out.extend_from_slice(b"content-length: ");
        push_decimal(out, n);
        out.extend_from_slice(b"\r\n");
        BodyFraming::Length(n)
    } else if to.http11 {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        BodyFraming::Chunked
    } else {
        BodyFraming::UntilClose
    };
    if !has_date {
        push_field(out, b"date", date);
    }
    let keep_alive = to.keep_alive && framing != BodyFraming::UntilClose;
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if !to.http11 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    (framing, keep_alive)
}

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Writes the line that starts a chunk of `len` bytes (RFC 9112 §7.1); the chunk's data and a
/// CRLF follow.
pub fn encode_chunk_size(out: &mut Vec<u8>, len: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut n = len;
    loop {
        i -= 1;
        digits[i] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// The end of a chunked body: the last chunk and an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// What [`ChunkedDecoder::decode`] found next.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Body bytes (a chunk, or the part of one that has arrived).
    Data(Bytes),
    /// The trailer section, when it has fields; [`Chunk::End`] follows.
    Trailers(HeaderMap),
    /// The body is complete; bytes after it in the buffer belong to the next response.
    End,
    /// Nothing more can be decoded from the buffer: read more.
    NeedMore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

/// Decodes a chunked body (RFC 9112 §7.1) from a buffer the caller fills: chunk extensions are
/// skipped, trailer fields returned, and only CRLF line ends accepted.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: ChunkState,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: ChunkState::Size,
        }
    }
}

impl ChunkedDecoder {
    /// Whether the whole body, trailers included, has been decoded.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes what it can from the start of `buf`, consuming it.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Chunk, CodecError> {
        loop {
            match self.state {
                ChunkState::Size => {
                    let Some(line_end) = find_crlf(buf, MAX_CHUNK_LINE)? else {
                        return Ok(Chunk::NeedMore);
                    };
                    let size = parse_chunk_size(&buf[..line_end])?;
                    buf.advance(line_end + 2);
                    self.state = if size == 0 {
                        ChunkState::Trailers
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Chunk::NeedMore);
                    }
                    let n = left.min(buf.len() as u64) as usize;
                    let data = buf.split_to(n).freeze();
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                    return Ok(Chunk::Data(data));
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Chunk::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(CodecError::BadChunk("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    let (len, trailers) = match httparse::parse_headers(buf, &mut fields) {
                        Ok(httparse::Status::Complete((len, fields))) => {
                            let mut map = HeaderMap::new();
                            for f in fields.iter() {
                                let name = HeaderName::from_bytes(f.name.as_bytes())
                                    .map_err(|_| CodecError::BadChunk("bad trailer field name"))?;
                                let value = HeaderValue::from_bytes(f.value)
                                    .map_err(|_| CodecError::BadHeaderValue)?;
                                map.append(name, value);
                            }
                            (len, map)
                        }
                        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                            return Err(CodecError::BadChunk("trailer section too large"))
                        }
                        Ok(httparse::Status::Partial) => return Ok(Chunk::NeedMore),
                        Err(httparse::Error::TooManyHeaders) => {
                            return Err(CodecError::BadChunk("too many trailer fields"))
                        }
                        Err(_) => return Err(CodecError::BadChunk("malformed trailer section")),
                    };
                    if len > MAX_HEAD {
                        return Err(CodecError::BadChunk("trailer section too large"));
                    }
                    buf.advance(len);
                    self.state = ChunkState::Done;
                    if !trailers.is_empty() {
                        return Ok(Chunk::Trailers(trailers));
                    }
                }
                ChunkState::Done => return Ok(Chunk::End),
            }
        }
    }
}

/// Index of the first CRLF in `buf`, if it starts within `limit` bytes; a bare LF is an error.
fn find_crlf(buf: &[u8], limit: usize) -> Result<Option<usize>, CodecError> {
    let window = &buf[..buf.len().min(limit + 2)];
    match window.iter().position(|&b| b == b'\n') {
        Some(0) => Err(CodecError::BadChunk("bare LF")),
        Some(i) if window[i - 1] == b'\r' => Ok(Some(i - 1)),
        Some(_) => Err(CodecError::BadChunk("bare LF")),
        None if buf.len() > limit + 1 => Err(CodecError::BadChunk("chunk-size line too long")),
        None => Ok(None),
    }
}

/// The size of a chunk-size line (without CRLF): hex digits, then optional extensions
/// (`;name[=value]`, with optional whitespace before the `;`), which are ignored.
fn parse_chunk_size(line: &[u8]) -> Result<u64, CodecError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(CodecError::BadChunk("chunk size is not hexadecimal"));
    }
    if digits > 16 {
        return Err(CodecError::BadChunk("chunk size too large"));
    }
    let rest = &line[digits..];
    let ext = rest.trim_ascii_start();
    if !ext.is_empty() && ext[0] != b';' {
        return Err(CodecError::BadChunk("junk after chunk size"));
    }
    if ext.contains(&b'\r') {
        return Err(CodecError::BadChunk("CR inside a chunk extension"));
    }
    line[..digits].iter().try_fold(0u64, |acc, &b| {
        let d = (b as char).to_digit(16).unwrap_or(0);
        acc.checked_mul(16)
            .map(|v| v | u64::from(d))
            .ok_or(CodecError::BadChunk("chunk size too large"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(raw: &str, head: bool) -> Result<Option<ResponseHead>, CodecError> {
        parse_response_head(&mut BytesMut::from(raw), head, &mut NameCache::default())
    }

    fn framing(raw: &str) -> (Framing, bool) {
        let h = parse(raw, false).unwrap().unwrap();
        (h.framing, h.keep_alive)
    }

    #[test]
    fn framing_follows_rfc_9112_section_6_3() {
        use Framing::*;
        let cases: &[(&str, Framing, bool)] = &[
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                Length(5),
                true,
            ),
            ("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", Empty, true),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
                Length(5),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
                Length(5),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                Chunked,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n",
                Chunked,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                UntilClose,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
                Chunked,
                false,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", UntilClose, false),
            (
                "HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n",
                Empty,
                true,
            ),
            (
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                Empty,
                true,
            ),
            ("HTTP/1.1 100 Continue\r\n\r\n", Empty, true),
            (
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
                Length(1),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n",
                Length(1),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\n",
                Length(1),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nConnection: upgrade, close\r\nContent-Length: 1\r\n\r\n",
                Length(1),
                false,
            ),
        ];
        for (raw, f, ka) in cases {
            assert_eq!(framing(raw), (*f, *ka), "{raw:?}");
        }
        // A response to HEAD has no body, whatever it announces.
        let h = parse("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Empty, true));
    }

    #[test]
    fn bad_heads_are_errors() {
        for cl in ["abc", "-1", "+5", "5 5", "", "18446744073709551616", "0x10"] {
            let raw = format!("HTTP/1.1 200 OK\r\nContent-Length: {cl}\r\n\r\n");
            assert_eq!(
                parse(&raw, false).unwrap_err(),
                CodecError::BadContentLength,
                "{cl:?}"
            );
        }
        let differ = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";
        assert_eq!(
            parse(differ, false).unwrap_err(),
            CodecError::BadContentLength
        );
        assert!(matches!(
            parse("HTTP/2 200 OK\r\n\r\n", false),
            Err(CodecError::Malformed(_))
        ));
        assert!(matches!(
            parse("HTTP/1.1 2000 OK\r\n\r\n", false),
            Err(CodecError::Malformed(_))
        ));
        assert!(matches!(
            parse("HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", false),
            Err(CodecError::Malformed(_))
        ));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
        let raw = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
        assert_eq!(parse(&raw, false).unwrap_err(), CodecError::TooManyHeaders);
        // A head that never ends is refused once it passes the limit, not buffered forever.
        let long = format!("HTTP/1.1 200 OK\r\nx-big: {}", "a".repeat(MAX_HEAD));
        assert_eq!(parse(&long, false).unwrap_err(), CodecError::HeadTooLarge);
        let long_done = format!("HTTP/1.1 200 OK\r\nx-big: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(
            parse(&long_done, false).unwrap_err(),
            CodecError::HeadTooLarge
        );
    }

    #[test]
    fn a_connections_name_cache_gives_the_names_a_fresh_parse_gives() {
        let mut names = NameCache::default();
        let mut head = |raw: &str| {
            let mut buf = BytesMut::from(raw);
            let h = parse_response_head(&mut buf, false, &mut names)
                .unwrap()
                .unwrap();
            h.headers.keys().map(|k| k.to_string()).collect::<Vec<_>>()
        };
        let a = "HTTP/1.1 200 OK\r\nServer: up\r\nX-Trace: 1\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(head(a), ["server", "x-trace", "content-length"]);
        assert_eq!(
            head(a),
            ["server", "x-trace", "content-length"],
            "from the cache"
        );
        // Another name, another spelling and another order at cached positions.
        let b = "HTTP/1.1 200 OK\r\nX-TRACE: 1\r\nEtag: \"e\"\r\nSERVER: up\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(head(b), ["x-trace", "etag", "server", "content-length"]);
        assert_eq!(head(a), ["server", "x-trace", "content-length"]);
        // Same length as the cached name at that position, other bytes.
        let c = "HTTP/1.1 200 OK\r\nX-Span: 1\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(head(c), ["x-span", "content-length"]);
        // Long names are parsed every time and never kept.
        let long = format!("HTTP/1.1 200 OK\r\nX-{}: 1\r\n\r\n", "l".repeat(40));
        assert_eq!(head(&long), [format!("x-{}", "l".repeat(40))]);
        assert_eq!(head(&long), [format!("x-{}", "l".repeat(40))]);
        // An invalid name at a cached position is still refused.
        let bad = "HTTP/1.1 200 OK\r\nServer: up\r\nX-T\x01: 1\r\n\r\n";
        assert!(parse_response_head(&mut BytesMut::from(bad), false, &mut names).is_err());
        assert!(names
            .seen
            .iter()
            .all(|(raw, _)| raw.len() <= NameCache::LONGEST));
        // Request heads too.
        let mut req =
            |raw: &str| match parse_request_head(&mut BytesMut::from(raw), 8192, 16, &mut names) {
                ParsedRequest::Head(h) => {
                    h.headers.keys().map(|k| k.to_string()).collect::<Vec<_>>()
                }
                _ => panic!("a plain request"),
            };
        let r = "GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: t\r\n\r\n";
        assert_eq!(req(r), ["host", "user-agent"]);
        assert_eq!(req(r), ["host", "user-agent"]);
        assert_eq!(
            req("GET / HTTP/1.1\r\nhost: a\r\nAccept: */*\r\n\r\n"),
            ["host", "accept"]
        );
    }

    #[test]
    fn a_head_is_split_off_and_its_values_share_the_buffer() {
        let mut buf = BytesMut::from("HTTP/1.1 404 Not Found\r\nServer: up\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 3\r\n\r\nabcHTTP");
        let h = parse_response_head(&mut buf, false, &mut NameCache::default())
            .unwrap()
            .unwrap();
        assert_eq!(h.status, StatusCode::NOT_FOUND);
        assert_eq!(h.version, Version::HTTP_11);
        assert_eq!(h.headers["server"], "up");
        let xa: Vec<_> = h.headers.get_all("x-a").iter().collect();
        assert_eq!(xa, ["1", "2"]);
        assert_eq!(
            &buf[..],
            b"abcHTTP",
            "the body and what follows stay in the buffer"
        );
        // Incomplete: nothing is consumed.
        let mut part = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Le");
        assert!(
            parse_response_head(&mut part, false, &mut NameCache::default())
                .unwrap()
                .is_none()
        );
        assert_eq!(part.len(), 27);
    }

    #[test]
    fn fields_about_the_connection_are_consumed_and_the_rest_kept() {
        let names = |raw: &str| -> Vec<String> {
            let h = parse(raw, false).unwrap().unwrap();
            h.headers.keys().map(|k| k.to_string()).collect()
        };
        assert_eq!(
            names("HTTP/1.1 200 OK\r\nConnection: Keep-Alive\r\nKeep-Alive: timeout=5\r\nServer: up\r\nTransfer-Encoding: chunked\r\n\r\n"),
            ["server"]
        );
        // Naming another field or saying close: left for the proxy's hop-by-hop handling.
        assert_eq!(
            names("HTTP/1.1 200 OK\r\nConnection: keep-alive, x-hop\r\nx-hop: 1\r\nContent-Length: 0\r\n\r\n"),
            ["connection", "x-hop", "content-length"]
        );
        assert_eq!(
            names("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"),
            ["connection", "content-length"]
        );
        // Consumed, not ignored: the framing and keep-alive still follow them.
        assert_eq!(
            framing("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n"),
            (Framing::Length(2), true)
        );
    }

    #[test]
    fn request_heads_carry_the_fields_and_a_content_length() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("up.example"));
        headers.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        headers.insert("content-length", HeaderValue::from_static("999"));
        headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        let mut out = Vec::new();
        encode_request_head(&mut out, &Method::GET, "/a?b=c", &headers, 0);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /a?b=c HTTP/1.1\r\nhost: up.example\r\nx-forwarded-for: 10.0.0.1\r\n\r\n"
        );
        let mut out = Vec::new();
        encode_request_head(&mut out, &Method::POST, "/", &HeaderMap::new(), 0);
        assert_eq!(out, b"POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
        let mut out = Vec::new();
        encode_request_head(&mut out, &Method::PUT, "/", &HeaderMap::new(), u64::MAX);
        assert_eq!(
            out,
            b"PUT / HTTP/1.1\r\ncontent-length: 18446744073709551615\r\n\r\n"
        );
    }

    fn decode_all(
        dec: &mut ChunkedDecoder,
        buf: &mut BytesMut,
    ) -> Result<(Vec<u8>, Option<HeaderMap>, bool), CodecError> {
        let (mut body, mut trailers) = (Vec::new(), None);
        loop {
            match dec.decode(buf)? {
                Chunk::Data(d) => body.extend_from_slice(&d),
                Chunk::Trailers(t) => trailers = Some(t),
                Chunk::End => return Ok((body, trailers, true)),
                Chunk::NeedMore => return Ok((body, trailers, false)),
            }
        }
    }

    #[test]
    fn bad_chunked_bodies_are_errors() {
        let cases: &[(&str, &str)] = &[
            ("g\r\n", "chunk size is not hexadecimal"),
            ("\r\n", "chunk size is not hexadecimal"),
            ("5\n", "bare LF"),
            ("\n", "bare LF"),
            ("11111111111111111\r\n", "chunk size too large"),
            ("5 x\r\n", "junk after chunk size"),
            ("3\r\nabcXY", "chunk data not followed by CRLF"),
            ("0\r\nbad trailer\r\n\r\n", "malformed trailer section"),
        ];
        for (raw, why) in cases {
            let err = decode_all(&mut ChunkedDecoder::default(), &mut BytesMut::from(*raw));
            assert_eq!(err.unwrap_err(), CodecError::BadChunk(why), "{raw:?}");
        }
        let long = format!("5;{}", "x".repeat(MAX_CHUNK_LINE));
        let err = decode_all(
            &mut ChunkedDecoder::default(),
            &mut BytesMut::from(long.as_str()),
        );
        assert_eq!(
            err.unwrap_err(),
            CodecError::BadChunk("chunk-size line too long")
        );
        // The largest chunk size parses (and then waits for its data).
        let mut buf = BytesMut::from("ffffffffffffffff\r\n");
        assert_eq!(
            ChunkedDecoder::default().decode(&mut buf),
            Ok(Chunk::NeedMore)
        );
    }

    /// A chunked encoding of `body` cut into `sizes`, with an extension on every other chunk and
    /// `trailers`, then `after` (the next response on the connection).
    fn encode_chunked(
        body: &[u8],
        sizes: &[usize],
        trailers: &[(String, String)],
        after: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = body;
        let mut i = 0;
        while !rest.is_empty() {
            let n = sizes
                .get(i)
                .copied()
                .unwrap_or(rest.len())
                .clamp(1, rest.len());
            let ext = if i % 2 == 1 { " ;name=\"v\"" } else { "" };
            out.extend_from_slice(format!("{n:X}{ext}\r\n").as_bytes());
            out.extend_from_slice(&rest[..n]);
            out.extend_from_slice(b"\r\n");
            rest = &rest[n..];
            i += 1;
        }
        out.extend_from_slice(b"0\r\n");
        for (k, v) in trailers {
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(after);
        out
    }

    /// `GET /p` with these fields, lines ended by `eol`, and the empty line.
    fn request_text(fields: &[(String, String)], eol: &str) -> String {
        let mut raw = format!("GET /p HTTP/1.1{eol}");
        for (k, v) in fields {
            raw.push_str(&format!("{k}: {v}{eol}"));
        }
        raw + eol
    }

    fn request(raw: &[u8]) -> (ParsedRequest, BytesMut) {
        let mut buf = BytesMut::from(raw);
        let parsed = parse_request_head(&mut buf, 8192, 16, &mut NameCache::default());
        (parsed, buf)
    }

    #[test]
    fn plain_requests_are_parsed_in_order_and_pipelined_ones_left() {
        let raw = b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-M: 1\r\nAccept: */*\r\nx-m: 2\r\nContent-Length: 0\r\n\r\nGET /next HTTP/1.1\r\n";
        let (parsed, rest) = request(raw);
        let ParsedRequest::Head(h) = parsed else {
            panic!("{parsed:?}")
        };
        assert_eq!(h.method, Method::GET);
        assert_eq!(h.uri.path(), "/a");
        assert_eq!(h.uri.query(), Some("b=1"));
        assert_eq!(h.version, Version::HTTP_11);
        assert!(h.keep_alive);
        let fields: Vec<_> = h
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes()))
            .collect();
        assert_eq!(
            fields,
            [
                ("host", &b"x"[..]),
                ("x-m", b"1"),
                ("x-m", b"2"),
                ("accept", b"*/*"),
                ("content-length", b"0"),
            ]
        );
        assert_eq!(&rest[..], b"GET /next HTTP/1.1\r\n");
        // The rest is a partial head: read more.
        let mut rest = rest;
        assert!(matches!(
            parse_request_head(&mut rest, 8192, 16, &mut NameCache::default()),
            ParsedRequest::Partial
        ));
        assert_eq!(&rest[..], b"GET /next HTTP/1.1\r\n");
    }

    #[test]
    fn the_end_of_a_head_is_found_across_pieces() {
        assert!(!may_end_head(b"GET / HTTP/1.1\r\nHost: x\r\n", 0));
        assert!(may_end_head(b"GET / HTTP/1.1\r\n\r\n", 0));
        assert!(may_end_head(b"GET / HTTP/1.1\n\n", 0));
        // The empty line straddles what was scanned and what is new.
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        for from in 0..=head.len() {
            assert!(may_end_head(head, from.min(head.len() - 1)), "{from}");
        }
        assert!(!may_end_head(head, head.len() + 5));
        assert!(!may_end_head(b"", 0));
    }

    #[test]
    fn a_body_that_came_with_the_head_is_split_off_with_it() {
        let (parsed, rest) =
            request(b"POST /f HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n");
        let ParsedRequest::Head(h) = parsed else {
            panic!("{parsed:?}")
        };
        assert_eq!((h.method, &h.body[..]), (Method::POST, &b"hello"[..]));
        assert_eq!(&rest[..], b"GET / HTTP/1.1\r\n");
        let (parsed, rest) = request(b"GET / HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
        assert!(matches!(parsed, ParsedRequest::Head(h) if h.body.is_empty()));
        assert!(rest.is_empty());
    }

    #[test]
    fn keep_alive_follows_version_and_connection() {
        let ka = |raw: &[u8]| match request(raw).0 {
            ParsedRequest::Head(h) => h.keep_alive,
            other => panic!("{other:?}"),
        };
        assert!(ka(b"GET / HTTP/1.1\r\n\r\n"));
        assert!(!ka(b"GET / HTTP/1.1\r\nConnection: foo, Close\r\n\r\n"));
        assert!(!ka(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(ka(b"GET / HTTP/1.0\r\nconnection: Keep-Alive\r\n\r\n"));
        assert!(!ka(
            b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"
        ));
    }

    #[test]
    fn anything_but_a_plain_request_is_handed_over_untouched() {
        let long_target = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(9000));
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X: 1\r\n".repeat(101));
        let cases: &[&[u8]] = &[
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nab",
            b"POST / HTTP/1.1\r\nContent-Length: 17\r\n\r\n01234567890123456",
            b"GET / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
            b"GET / HTTP/1.1\r\ncontent-length: +0\r\n\r\n",
            b"GET / HTTP/1.1\r\ncontent-length: 1,1\r\n\r\nab",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            b"PUT / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GARBAGE\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
            b"GET /a\x7fb HTTP/1.1\r\n\r\n",
            long_target.as_bytes(),
            many.as_bytes(),
        ];
        for raw in cases {
            let (parsed, rest) = request(raw);
            assert!(
                matches!(parsed, ParsedRequest::HandOver),
                "{:?}: {parsed:?}",
                String::from_utf8_lossy(raw)
            );
            assert_eq!(&rest[..], *raw, "{:?}", String::from_utf8_lossy(raw));
        }
        // A head still arriving past the limit is handed over too (hyper answers 431).
        let (parsed, _) = request(format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(9000)).as_bytes());
        assert!(matches!(parsed, ParsedRequest::HandOver));
    }

    fn response(
        status: u16,
        fields: &[(&str, &str)],
        body_len: Option<u64>,
        to: ResponseTo,
    ) -> (String, BodyFraming, bool) {
        let mut headers = HeaderMap::new();
        for (k, v) in fields {
            headers.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let mut out = Vec::new();
        let (framing, keep_alive) = encode_response_head(
            &mut out,
            StatusCode::from_u16(status).unwrap(),
            &headers,
            body_len,
            to,
            b"Mon, 07 Dec 2026 01:02:03 GMT",
        );
        (String::from_utf8(out).unwrap(), framing, keep_alive)
    }

    const GET11: ResponseTo = ResponseTo {
        head_request: false,
        http11: true,
        keep_alive: true,
    };

    #[test]
    fn response_heads_frame_the_body_and_say_what_happens_to_the_connection() {
        // A known length is announced; Date added; fields about the connection are not passed on.
        let (head, framing, ka) = response(
            200,
            &[
                ("server", "up"),
                ("connection", "x-a"),
                ("keep-alive", "timeout=5"),
                ("transfer-encoding", "chunked"),
            ],
            Some(5),
            GET11,
        );
        assert_eq!(
            head,
            "HTTP/1.1 200 OK\r\nserver: up\r\ncontent-length: 5\r\ndate: Mon, 07 Dec 2026 01:02:03 GMT\r\n\r\n"
        );
        assert_eq!((framing, ka), (BodyFraming::Length(5), true));
        // The fields' Content-Length decides; a Date of its own is kept.
        let (head, framing, _) = response(
            404,
            &[("content-length", "7"), ("date", "then")],
            None,
            GET11,
        );
        assert_eq!(
            head,
            "HTTP/1.1 404 Not Found\r\ncontent-length: 7\r\ndate: then\r\n\r\n"
        );
        assert_eq!(framing, BodyFraming::Length(7));
        // Unknown length: chunked to HTTP/1.1, until close to HTTP/1.0.
        let (head, framing, ka) = response(200, &[], None, GET11);
        assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
        assert_eq!((framing, ka), (BodyFraming::Chunked, true));
        let http10 = ResponseTo {
            http11: false,
            ..GET11
        };
        let (head, framing, ka) = response(200, &[], None, http10);
        assert!(head.ends_with("connection: close\r\n\r\n"), "{head}");
        assert!(!head.contains("transfer-encoding"), "{head}");
        assert_eq!((framing, ka), (BodyFraming::UntilClose, false));
        // HTTP/1.0 keep-alive is said back; a client's close is answered with close.
        let (head, _, ka) = response(200, &[], Some(0), http10);
        assert!(
            head.ends_with("connection: keep-alive\r\n\r\n") && ka,
            "{head}"
        );
        let close = ResponseTo {
            keep_alive: false,
            ..GET11
        };
        let (head, _, ka) = response(200, &[], Some(0), close);
        assert!(head.ends_with("connection: close\r\n\r\n") && !ka, "{head}");
    }

    #[test]
    fn responses_without_a_body() {
        let head_req = ResponseTo {
            head_request: true,
            ..GET11
        };
        // HEAD: the fields' length is kept, none is added, no body follows.
        let (head, framing, _) = response(200, &[("content-length", "1024")], Some(0), head_req);
        assert!(head.contains("content-length: 1024\r\n"), "{head}");
        assert_eq!(framing, BodyFraming::None);
        let (head, framing, _) = response(200, &[], Some(0), head_req);
        assert!(!head.contains("content-length"), "{head}");
        assert_eq!(framing, BodyFraming::None);
        // 204 never carries a length; 304 keeps the one of the resource.
        let (head, framing, _) = response(204, &[("content-length", "3")], Some(0), GET11);
        assert!(!head.contains("content-length"), "{head}");
        assert_eq!(framing, BodyFraming::None);
        let (head, framing, _) = response(304, &[("content-length", "3")], Some(0), GET11);
        assert!(head.contains("content-length: 3\r\n"), "{head}");
        assert_eq!(framing, BodyFraming::None);
        // A bad or repeated length in the fields is dropped; the body's own is announced.
        let (head, framing, _) = response(
            200,
            &[
                ("content-length", "x"),
                ("content-length", "2"),
                ("content-length", "3"),
            ],
            Some(2),
            GET11,
        );
        assert_eq!(head.matches("content-length").count(), 1, "{head}");
        assert!(head.contains("content-length: 2\r\n"), "{head}");
        assert_eq!(framing, BodyFraming::Length(2));
    }

    #[test]
    fn chunk_sizes_are_hex() {
        for (len, want) in [
            (0, "0\r\n"),
            (10, "a\r\n"),
            (4096, "1000\r\n"),
            (usize::MAX, "ffffffffffffffff\r\n"),
        ] {
            let mut out = Vec::new();
            encode_chunk_size(&mut out, len);
            assert_eq!(out, want.as_bytes());
        }
    }

    proptest! {
        #[test]
        fn chunked_bodies_decode_whatever_the_reads(
            body in proptest::collection::vec(any::<u8>(), 0..3000),
            sizes in proptest::collection::vec(1usize..700, 0..10),
            trailers in proptest::collection::vec(("x-[a-z]{1,8}", "[a-z0-9]{0,8}"), 0..3),
            cuts in proptest::collection::vec(1usize..200, 1..40),
        ) {
            let wire = encode_chunked(&body, &sizes, &trailers, b"HTTP/1.1 200 OK\r\n");
            let mut dec = ChunkedDecoder::default();
            let mut buf = BytesMut::new();
            let (mut got, mut got_trailers, mut done) = (Vec::new(), None, false);
            let mut fed = 0;
            let mut cut = cuts.iter().cycle();
            while !done {
                prop_assert!(fed < wire.len(), "ran out of input before the end");
                let n = (*cut.next().unwrap()).min(wire.len() - fed);
                buf.extend_from_slice(&wire[fed..fed + n]);
                fed += n;
                let (b, t, d) = decode_all(&mut dec, &mut buf).unwrap();
                got.extend_from_slice(&b);
                got_trailers = got_trailers.or(t);
                done = d;
            }
            prop_assert_eq!(&got, &body);
            prop_assert!(dec.is_done());
            let want: Vec<(String, String)> = trailers.clone();
            let have: Vec<(String, String)> = got_trailers
                .iter()
                .flat_map(|m| m.iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string())))
                .collect();
            let mut want_sorted = want; want_sorted.sort();
            let mut have_sorted = have; have_sorted.sort();
            prop_assert_eq!(have_sorted, want_sorted);
            // The next response's bytes are left alone.
            let mut rest = buf.to_vec();
            rest.extend_from_slice(&wire[fed..]);
            prop_assert_eq!(&rest[..], b"HTTP/1.1 200 OK\r\n");
        }

        #[test]
        fn every_value_httparse_accepts_is_a_header_value(
            value in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let mut raw = b"HTTP/1.1 200 OK\r\nx-v: ".to_vec();
            raw.extend_from_slice(&value);
            raw.extend_from_slice(b"\r\ncontent-length: 0\r\n\r\n");
            // httparse drops the optional whitespace (SP and HTAB only) around a value.
            let ows = |b: &u8| *b == b' ' || *b == b'\t';
            let start = value.iter().position(|b| !ows(b)).unwrap_or(value.len());
            let end = value.iter().rposition(|b| !ows(b)).map_or(start, |i| i + 1);
            let checked = HeaderValue::from_bytes(&value[start..end]);
            match parse_response_head(&mut BytesMut::from(&raw[..]), false, &mut NameCache::default()) {
                Ok(Some(head)) => {
                    // Accepted: the value must be one `HeaderValue` accepts too.
                    let got = head.headers.get("x-v").expect("the field");
                    prop_assert!(HeaderValue::from_bytes(got.as_bytes()).is_ok());
                }
                Ok(None) | Err(_) => {
                    // Rejected or read as something else (a CR or LF in `value`); the only
                    // values rejected must be ones `HeaderValue` rejects too.
                    prop_assert!(
                        checked.is_err() || value.iter().any(|&b| b == b'\r' || b == b'\n'),
                        "httparse rejected a valid value {:?}", value
                    );
                }
            }
        }

        #[test]
        fn request_heads_never_panic_and_hand_over_untouched(
            data in proptest::collection::vec(any::<u8>(), 0..600),
            prefixed in any::<bool>(),
        ) {
            let mut raw = if prefixed { b"GET / HTTP/1.1\r\n".to_vec() } else { Vec::new() };
            raw.extend_from_slice(&data);
            let mut buf = BytesMut::from(&raw[..]);
            match parse_request_head(&mut buf, 512, 16, &mut NameCache::default()) {
                ParsedRequest::Head(h) => {
                    prop_assert!(h.uri.path().starts_with('/'));
                    prop_assert!(raw.ends_with(&buf));
                }
                ParsedRequest::Partial | ParsedRequest::HandOver => prop_assert_eq!(&buf[..], &raw[..]),
            }
        }

        #[test]
        fn a_request_in_pieces_is_parsed_once_its_end_is_there(
            fields in proptest::collection::vec(("x-[a-z]{1,6}", "[ -~]{0,20}"), 0..8),
            cuts in proptest::collection::vec(1usize..40, 1..30),
            bare_lf in any::<bool>(),
        ) {
            let raw = request_text(&fields, if bare_lf { "\n" } else { "\r\n" }).into_bytes();
            let (mut buf, mut gate, mut fed, mut parses) = (BytesMut::new(), HeadGate::default(), 0, 0);
            let mut cuts = cuts.into_iter().cycle();
            let head = loop {
                let n = cuts.next().unwrap().min(raw.len() - fed);
                buf.extend_from_slice(&raw[fed..fed + n]);
                fed += n;
                if gate.worth_parsing(&buf, 8192) {
                    parses += 1;
                    match parse_request_head(&mut buf, 8192, 16, &mut NameCache::default()) {
                        ParsedRequest::Head(h) => break h,
                        ParsedRequest::Partial => gate.incomplete(buf.len()),
                        ParsedRequest::HandOver => panic!("a plain request"),
                    }
                }
                prop_assert!(fed < raw.len(), "the whole head is in and was not parsed");
            };
            prop_assert!(parses <= 2, "{} parses", parses);
            prop_assert_eq!(head.headers.len(), fields.len());
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn a_request_head_parses_the_same_however_it_arrives(
            fields in proptest::collection::vec(("x-[a-z]{1,6}", "[ -~]{0,20}"), 0..8),
            cut in 0usize..400,
        ) {
            let raw = request_text(&fields, "\r\n") + "GET /q HTTP/1.1\r\n";
            let cut = cut.min(raw.len());
            let mut early = BytesMut::from(&raw[..cut]);
            let early = parse_request_head(&mut early, 8192, 16, &mut NameCache::default());
            let mut whole = BytesMut::from(raw.as_str());
            let ParsedRequest::Head(full) = parse_request_head(&mut whole, 8192, 16, &mut NameCache::default()) else {
                panic!("a plain request")
            };
            prop_assert_eq!(&whole[..], b"GET /q HTTP/1.1\r\n");
            prop_assert_eq!(full.headers.len(), fields.len());
            match early {
                ParsedRequest::Head(h) => prop_assert_eq!(h.headers, full.headers),
                ParsedRequest::Partial => {}
                ParsedRequest::HandOver => prop_assert!(false, "handed over at {}", cut),
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600), head in any::<bool>()) {
            let mut buf = BytesMut::from(&data[..]);
            let _ = parse_response_head(&mut buf, head, &mut NameCache::default());
            let mut buf = BytesMut::from(&data[..]);
            let _ = decode_all(&mut ChunkedDecoder::default(), &mut buf);
            let mut prefixed = b"HTTP/1.1 200 OK\r\n".to_vec();
            prefixed.extend_from_slice(&data);
            let _ = parse_response_head(&mut BytesMut::from(&prefixed[..]), head, &mut NameCache::default());
        }

        #[test]
        fn heads_parse_the_same_through_a_connections_name_cache(
            heads in proptest::collection::vec(
                proptest::collection::vec(
                    (prop_oneof![
                        Just("Server"), Just("server"), Just("SERVER"), Just("Date"),
                        Just("X-A"), Just("x-a"), Just("Set-Cookie"), Just("ETag"),
                    ], "[a-z0-9]{0,6}"),
                    0..40,
                ),
                1..6,
            ),
        ) {
            let mut names = NameCache::default();
            for fields in &heads {
                let mut raw = String::from("HTTP/1.1 200 OK\r\n");
                for (k, v) in fields {
                    raw.push_str(&format!("{k}: {v}\r\n"));
                }
                raw.push_str("Content-Length: 0\r\n\r\n");
                let cached = parse_response_head(&mut BytesMut::from(raw.as_str()), false, &mut names)
                    .unwrap()
                    .unwrap();
                let fresh = parse_response_head(&mut BytesMut::from(raw.as_str()), false, &mut NameCache::default())
                    .unwrap()
                    .unwrap();
                let list = |h: &HeaderMap| h.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>();
                prop_assert_eq!(list(&cached.headers), list(&fresh.headers));
            }
        }

        #[test]
        fn a_head_parses_the_same_however_it_arrives(
            fields in proptest::collection::vec(("x-[a-z]{1,6}", "[ -~]{0,20}"), 0..8),
            cut in 0usize..400,
        ) {
            let mut raw = String::from("HTTP/1.1 200 OK\r\n");
            for (k, v) in &fields {
                raw.push_str(&format!("{k}: {v}\r\n"));
            }
            raw.push_str("Content-Length: 2\r\n\r\nok");
            let cut = cut.min(raw.len());
            let mut buf = BytesMut::from(&raw[..cut]);
            let early = parse_response_head(&mut buf, false, &mut NameCache::default()).unwrap();
            let mut whole = BytesMut::from(raw.as_str());
            let full = parse_response_head(&mut whole, false, &mut NameCache::default()).unwrap().unwrap();
            prop_assert_eq!(&whole[..], b"ok");
            prop_assert_eq!(full.framing, Framing::Length(2));
            prop_assert_eq!(full.headers.len(), fields.len() + 1);
            for (k, v) in &fields {
                let want = v.trim_matches(|c| c == ' ' || c == '\t');
                prop_assert!(full.headers.get_all(k.as_str()).iter().any(|h| h.as_bytes() == want.as_bytes()));
            }
            if let Some(h) = early {
                prop_assert_eq!(h.framing, full.framing);
                prop_assert_eq!(h.headers, full.headers);
            }
        }
    }
}
