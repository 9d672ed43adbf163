//! The admin protocol: newline-delimited JSON over a Unix socket, shared by vipd and vip-l7
//! (server, client and the socket file).
//!
//! Request, one per line:
//! `{"v":1,"id":7,"cmd":"vip.list","args":{}}` (`id` is any JSON value, echoed back; `args`
//! defaults to `{}`). Response, one per line, in request order:
//! `{"v":1,"id":7,"ok":true,"result":...}` or
//! `{"v":1,"id":7,"ok":false,"error":{"code":"unknown_command","message":"..."}}`.
//!
//! Every input gets a structured reply: invalid UTF-8 or JSON (`bad_json`), not an object or no
//! `cmd` (`bad_request`), another version (`unsupported_version`), a line over the size limit
//! (`request_too_large`, then the connection is closed since the rest of the line cannot be
//! trusted). A connection idle past the timeout is closed; at most [`MAX_CONNECTIONS`] are
//! served at once and the next gets a `busy` error.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::future::Future;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// Protocol version.
pub const VERSION: u64 = 1;
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 256;

/// A boxed future (object-safe async trait methods).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A structured error reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminError {
    /// Machine-readable code (`unknown_command`, `bad_args`, `not_found`...).
    pub code: &'static str,
    /// What went wrong and what to do.
    pub message: String,
}

impl AdminError {
    /// An error with this code and message.
    pub fn new(code: &'static str, message: impl Into<String>) -> AdminError {
        AdminError {
            code,
            message: message.into(),
        }
    }

    /// `bad_args`.
    pub fn bad_args(message: impl Into<String>) -> AdminError {
        AdminError::new("bad_args", message)
    }
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// Answers admin commands.
pub trait Handler: Send + Sync + 'static {
    /// Runs `cmd` with `args` (a JSON object).
    fn handle<'a>(
        &'a self,
        cmd: &'a str,
        args: &'a Value,
    ) -> BoxFuture<'a, Result<Value, AdminError>>;
}

/// A parsed request.
#[derive(Debug)]
pub struct Request {
    /// Echoed id.
    pub id: Value,
    /// Command.
    pub cmd: String,
    /// Arguments object.
    pub args: Value,
}

/// Parses one request line; on error returns the id (if one could be read) and the error.
pub fn parse_request(line: &[u8]) -> Result<Request, (Value, AdminError)> {
    let text = std::str::from_utf8(line).map_err(|_| {
        (
            Value::Null,
            AdminError::new("bad_json", "request is not UTF-8 text"),
        )
    })?;
    let value: Value = serde_json::from_str(text.trim_end_matches('\r')).map_err(|e| {
        (
            Value::Null,
            AdminError::new("bad_json", format!("request is not valid JSON: {e}")),
        )
    })?;
    let Value::Object(mut object) = value else {
        return Err((
            Value::Null,
            AdminError::new(
                "bad_request",
                "request must be a JSON object like {\"v\":1,\"cmd\":\"status\"}",
            ),
        ));
    };
    let id = object.remove("id").unwrap_or(Value::Null);
    match object.get("v") {
        Some(v) if v.as_u64() == Some(VERSION) => {}
        Some(v) => {
            return Err((
                id,
                AdminError::new(
                    "unsupported_version",
                    format!(
                        "protocol version {v} is not supported; this server speaks v = {VERSION}"
                    ),
                ),
            ))
        }
        None => {
            return Err((
                id,
                AdminError::new("bad_request", "missing \"v\": set \"v\":1"),
            ))
        }
    }
    let cmd = match object.remove("cmd") {
        Some(Value::String(cmd)) => cmd,
        _ => {
            return Err((
                id,
                AdminError::new("bad_request", "missing or non-string \"cmd\""),
            ))
        }
    };
    let args = match object.remove("args") {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(args @ Value::Object(_)) => args,
        Some(_) => {
            return Err((
                id,
                AdminError::new("bad_request", "\"args\" must be an object"),
            ))
        }
    };
    Ok(Request { id, cmd, args })
}

/// Encodes a reply line (with the trailing newline).
pub fn encode_reply(id: &Value, result: Result<Value, AdminError>) -> Vec<u8> {
    let reply = match result {
        Ok(result) => json!({"v": VERSION, "id": id, "ok": true, "result": result}),
        Err(e) => {
            json!({"v": VERSION, "id": id, "ok": false, "error": {"code": e.code, "message": e.message}})
        }
    };
    let mut line = reply.to_string().into_bytes();
    line.push(b'\n');
    line
}

/// Parses and answers one request line.
pub async fn answer<H: Handler + ?Sized>(handler: &H, line: &[u8]) -> Vec<u8> {
    match parse_request(line) {
        Ok(request) => {
            let result = handler.handle(&request.cmd, &request.args).await;
            encode_reply(&request.id, result)
        }
        Err((id, e)) => encode_reply(&id, Err(e)),
    }
}

/// Limits of one server.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest request line.
    pub max_request_bytes: usize,
    /// Idle connections are closed after this.
    pub idle_timeout: Duration,
}

enum Line {
    Complete,
    Eof,
    TooLong,
}

/// Reads one line into `buf` (without the newline), storing at most `max` bytes.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<Line> {
    buf.clear();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(if buf.is_empty() {
                Line::Eof
            } else {
                Line::Complete
            });
        }
        let (chunk, found) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], Some(i + 1)),
            None => (available, None),
        };
        if buf.len() + chunk.len() > max {
            return Ok(Line::TooLong);
        }
        buf.extend_from_slice(chunk);
        let used = found.unwrap_or(available.len());
        reader.consume(used);
        if found.is_some() {
            return Ok(Line::Complete);
        }
    }
}

/// How long, and for how many bytes, an oversized request is read on after its error reply.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 16 << 20;

/// Reads and drops input until EOF, an error or `max` bytes.
async fn discard<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R, max: usize) {
    let mut total = 0;
    while total < max {
        match reader.fill_buf().await {
            Ok([]) | Err(_) => return,
            Ok(b) => {
                let n = b.len();
                reader.consume(n);
                total += n;
            }
        }
    }
}

/// Serves one connection until EOF, an I/O error, the idle timeout or an oversized request.
pub async fn serve_connection<H: Handler + ?Sized>(
    handler: &H,
    stream: UnixStream,
    limits: Limits,
) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut buf = Vec::new();
    loop {
        let line = match tokio::time::timeout(
            limits.idle_timeout,
            read_line(&mut reader, &mut buf, limits.max_request_bytes),
        )
        .await
        {
            Err(_) | Ok(Err(_)) | Ok(Ok(Line::Eof)) => return,
            Ok(Ok(line)) => line,
        };
        let reply = match line {
            Line::Complete if buf.iter().all(u8::is_ascii_whitespace) => continue,
            Line::Complete => answer(handler, &buf).await,
            Line::TooLong => encode_reply(
                &Value::Null,
                Err(AdminError::new(
                    "request_too_large",
                    format!(
                        "request line longer than {} bytes; the connection is closed",
                        limits.max_request_bytes
                    ),
                )),
            ),
            Line::Eof => return,
        };
        if write.write_all(&reply).await.is_err() {
            return;
        }
        if matches!(line, Line::TooLong) {
            let _ = write.shutdown().await;
            // Lingering close: take in (and drop) what the client is still sending, for a
            // while, so that closing with unread input does not reset the connection before
            // the client has read the reply.
            let _ = tokio::time::timeout(LINGER, discard(&mut reader, LINGER_BYTES)).await;
            return;
        }
    }
}

/// Binds the socket at `path` with mode 0660, creating the parent directory. A stale socket
/// file (nobody listening) is replaced; a live one is an error.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{}: another process is listening on this admin socket; stop it or set [admin] socket", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// Accepts connections forever, each on its own task.
pub async fn serve<H: Handler>(
    handler: Arc<H>,
    listener: UnixListener,
    limits: tokio::sync::watch::Receiver<Limits>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        // A reload may change the limits: new connections take the current ones.
        let limits = *limits.borrow();
        let handler = Arc::clone(&handler);
        match Arc::clone(&slots).try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(async move {
                    serve_connection(&*handler, stream, limits).await;
                    drop(permit);
                });
            }
            Err(_) => {
                tokio::spawn(async move {
                    let reply = encode_reply(
                        &Value::Null,
                        Err(AdminError::new(
                            "busy",
                            format!("more than {MAX_CONNECTIONS} admin connections; retry later"),
                        )),
                    );
                    let _ = stream.write_all(&reply).await;
                });
            }
        }
    }
}

/// Removes the socket file when dropped.
#[derive(Debug)]
pub struct SocketFile(pub PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Client side: sends one request and reads one reply (vipctl, tests).
pub async fn call(path: &Path, cmd: &str, args: Value, timeout: Duration) -> io::Result<Value> {
    let work = async {
        let stream = UnixStream::connect(path).await?;
        let (read, mut write) = stream.into_split();
        let mut line = json!({"v": VERSION, "id": 1, "cmd": cmd, "args": args})
            .to_string()
            .into_bytes();
        line.push(b'\n');
        write.write_all(&line).await?;
        let mut reader = BufReader::new(read);
        let mut reply = String::new();
        reader.read_line(&mut reply).await?;
        serde_json::from_str::<Value>(&reply).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad reply from server: {e}"),
            )
        })
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no reply from the admin socket"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    struct Echo;
    impl Handler for Echo {
        fn handle<'a>(
            &'a self,
            cmd: &'a str,
            args: &'a Value,
        ) -> BoxFuture<'a, Result<Value, AdminError>> {
            Box::pin(async move {
                match cmd {
                    "echo" => Ok(args.clone()),
                    _ => Err(AdminError::new(
                        "unknown_command",
                        format!("unknown command {cmd:?}"),
                    )),
                }
            })
        }
    }

    fn reply(line: &[u8]) -> Value {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let out = rt.block_on(answer(&Echo, line));
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn envelope() {
        let r = reply(br#"{"v":1,"id":"a","cmd":"echo","args":{"x":1}}"#);
        assert_eq!(r, json!({"v":1,"id":"a","ok":true,"result":{"x":1}}));
        let r = reply(br#"{"v":1,"id":2,"cmd":"nope"}"#);
        assert_eq!(r["error"]["code"], "unknown_command");
        assert_eq!(r["id"], 2);
        assert_eq!(
            reply(br#"{"v":2,"id":3,"cmd":"echo"}"#)["error"]["code"],
            "unsupported_version"
        );
        assert_eq!(
            reply(br#"{"id":3,"cmd":"echo"}"#)["error"]["code"],
            "bad_request"
        );
        assert_eq!(reply(br#"[1,2]"#)["error"]["code"], "bad_request");
        assert_eq!(
            reply(br#"{"v":1,"cmd":"echo","args":3}"#)["error"]["code"],
            "bad_request"
        );
        assert_eq!(reply(b"{\"v\":1,\xff}")["error"]["code"], "bad_json");
        assert_eq!(reply(b"{")["error"]["code"], "bad_json");
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_get_a_structured_reply(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let line: Vec<u8> = bytes.into_iter().filter(|&b| b != b'\n').collect();
            let r = reply(&line);
            proptest::prop_assert_eq!(&r["v"], &json!(1));
            proptest::prop_assert!(r["ok"].is_boolean());
        }
    }

    #[tokio::test]
    async fn server_limits_and_many_clients() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let listener = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        assert!(bind(&path).is_err(), "live socket is not replaced");
        let limits = Limits {
            max_request_bytes: 256,
            idle_timeout: Duration::from_millis(300),
        };
        let (_limits_tx, limits) = tokio::sync::watch::channel(limits);
        let server = tokio::spawn(serve(Arc::new(Echo), listener, limits));
        // Many clients at once.
        let mut tasks = Vec::new();
        for i in 0..50 {
            let path = path.clone();
            tasks.push(tokio::spawn(async move {
                let r = call(&path, "echo", json!({"i": i}), Duration::from_secs(5))
                    .await
                    .unwrap();
                assert_eq!(r["result"]["i"], i);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // Oversized line: error, then closed.
        let mut s = UnixStream::connect(&path).await.unwrap();
        s.write_all(&vec![b'x'; 1000]).await.unwrap();
        let mut reader = BufReader::new(s);
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        let r: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(r["error"]["code"], "request_too_large");
        line.clear();
        assert_eq!(reader.read_line(&mut line).await.unwrap(), 0, "closed");
        // A much longer line, still being written when the error is sent: the server reads on
        // (lingering close), so the client's write completes and it reads the error, not a
        // reset. Without the linger this fails with EPIPE or ECONNRESET.
        for _ in 0..20 {
            let mut s = UnixStream::connect(&path).await.unwrap();
            s.write_all(&vec![b'x'; 512 * 1024]).await.unwrap();
            s.write_all(b"\n").await.unwrap();
            s.shutdown().await.unwrap();
            let mut reply = String::new();
            s.read_to_string(&mut reply).await.unwrap();
            assert!(reply.contains("request_too_large"), "{reply}");
        }
        // Idle: closed after the timeout.
        let s = UnixStream::connect(&path).await.unwrap();
        let mut reader = BufReader::new(s);
        let started = std::time::Instant::now();
        assert_eq!(reader.read_line(&mut line).await.unwrap(), 0);
        assert!(started.elapsed() >= Duration::from_millis(250));
        server.abort();
    }
}
