//! A small HTTP/1.1 server on the host stack's TCP sockets: how the
//! appliance serves `/metrics`, `/status` and (later) the control API on
//! the addresses it owns.
//!
//! * **Limits first.** A request line plus headers larger than
//!   [`HttpConfig::max_header_bytes`] gets 431, a body larger than
//!   [`HttpConfig::max_body_bytes`] 413, a request that has not fully
//!   arrived within [`HttpConfig::request_timeout`] 408; each then closes
//!   the connection. Chunked request bodies are refused (501): nothing here
//!   needs them, and not parsing them removes a classic smuggling vector.
//!   A fixed number of sockets per port ([`HttpConfig::max_connections`])
//!   bounds memory whatever peers do.
//! * **Token for changes.** Every method but GET, HEAD and OPTIONS must
//!   carry `Authorization: Bearer TOKEN` matching
//!   [`HttpConfig::token`] (compared in constant time), or it gets 401
//!   before the handler sees it. With no token configured such requests are
//!   always refused.
//! * **The handler never runs under the stack's lock.** The host thread
//!   moves bytes between smoltcp sockets and per-connection buffers while
//!   it holds the stack, then releases it and runs the [`Handler`], so a
//!   handler may use the socket API or take its time without stalling
//!   anyone but its own clients.
//! * Keep-alive (HTTP/1.1's default; `Connection: close` and HTTP/1.0 close
//!   after the response) and pipelined requests, answered in order.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;

use super::config::HttpConfig;
use super::stats::{HostStackStats, HttpCounters};

/// A parsed request, as a [`Handler`] sees it.
#[derive(Debug)]
pub struct Request<'a> {
    /// Method, as sent (`GET`).
    pub method: &'a str,
    /// The request target, as sent (`/metrics?x=1`).
    pub target: &'a str,
    /// The target's path (`/metrics`).
    pub path: &'a str,
    /// The target's query, without the `?` (empty when none).
    pub query: &'a str,
    /// Minor HTTP version (0 or 1).
    pub minor_version: u8,
    /// Headers in order, names as sent.
    pub headers: Vec<(&'a str, &'a str)>,
    /// The body (`Content-Length` bytes).
    pub body: &'a [u8],
    /// The client.
    pub peer: SocketAddr,
    /// The host stack's counters when the request was served.
    pub host: &'a HostStackStats,
}

impl Request<'_> {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// Whether the method may change state (anything but GET, HEAD,
    /// OPTIONS); such requests reach a handler only with the right token.
    pub fn changes_state(&self) -> bool {
        !matches!(self.method, "GET" | "HEAD" | "OPTIONS")
    }
}

/// A response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: String,
    /// Further headers (`Content-Length`, `Connection` and `Server` are
    /// written by the server).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// A response with a body of the given type.
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type: content_type.to_string(),
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// A `text/plain` response.
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response::new(status, "text/plain; charset=utf-8", body.into())
    }

    /// An `application/json` response.
    pub fn json(status: u16, body: impl Into<String>) -> Response {
        Response::new(status, "application/json", body.into())
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    fn error(status: u16) -> Response {
        Response::text(status, format!("{status} {}\n", reason(status)))
    }
}

/// What serves requests. Runs on the host thread, without the stack's lock
/// held; a slow handler delays only the HTTP service.
pub trait Handler: Send {
    /// Answers one request. Requests that change state arrive only with
    /// the configured token.
    fn handle(&mut self, req: &Request<'_>) -> Response;
}

impl<F> Handler for F
where
    F: FnMut(&Request<'_>) -> Response + Send,
{
    fn handle(&mut self, req: &Request<'_>) -> Response {
        self(req)
    }
}

/// The Prometheus content type (text exposition format 0.0.4).
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A handler serving `GET /metrics` (Prometheus text from `metrics`) and
/// `GET /status` (JSON from `status`); both get the host stack's counters.
/// Other methods on those paths get 405, other paths 404.
pub fn metrics_status<M, S>(mut metrics: M, mut status: S) -> impl Handler
where
    M: FnMut(&HostStackStats) -> String + Send,
    S: FnMut(&HostStackStats) -> String + Send,
{
    move |req: &Request<'_>| {
        let read = matches!(req.method, "GET" | "HEAD");
        match req.path {
            "/metrics" if read => {
                Response::new(200, PROMETHEUS_CONTENT_TYPE, metrics(req.host).into_bytes())
            }
            "/status" if read => Response::json(200, status(req.host)),
            "/" if read => Response::text(200, "sluice: GET /metrics, GET /status\n"),
            "/metrics" | "/status" | "/" => Response::error(405).with_header("Allow", "GET, HEAD"),
            _ => Response::error(404),
        }
    }
}

/// The reason phrase of a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// A request whose head parsed, borrowed from the connection's buffer.
#[derive(Debug)]
pub(crate) struct Parsed<'a> {
    method: &'a str,
    target: &'a str,
    minor: u8,
    headers: Vec<(&'a str, &'a str)>,
    body: &'a [u8],
    keep_alive: bool,
    /// Bytes of the buffer this request used.
    consumed: usize,
}

/// Outcome of parsing the front of a connection's buffer.
#[derive(Debug)]
pub(crate) enum Parse<'a> {
    /// More bytes are needed.
    Incomplete,
    /// A whole request.
    Done(Parsed<'a>),
    /// A request that must be refused with this status, then the
    /// connection closed.
    Reject(u16),
}

const MAX_HEADERS: usize = 64;

fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// Parses one request from the front of `buf` (RFC 9112, strictly: CRLF
/// line ends, no obsolete line folding, one `Content-Length`).
pub(crate) fn parse(buf: &[u8], max_header: usize, max_body: usize) -> Parse<'_> {
    let head_end = match buf.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) if i + 4 > max_header => return Parse::Reject(431),
        Some(i) => i,
        None if buf.len() >= max_header => return Parse::Reject(431),
        None => return Parse::Incomplete,
    };
    let Ok(head) = std::str::from_utf8(&buf[..head_end]) else {
        return Parse::Reject(400);
    };
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Parse::Reject(400);
    };
    if method.is_empty() || !method.bytes().all(is_token_char) {
        return Parse::Reject(400);
    }
    if !target.starts_with('/') || target.bytes().any(|c| c <= b' ' || c == 0x7f) {
        return Parse::Reject(400);
    }
    let minor = match version {
        "HTTP/1.1" => 1,
        "HTTP/1.0" => 0,
        _ => return Parse::Reject(400),
    };
    let mut headers = Vec::new();
    let mut content_length: Option<usize> = None;
    let mut keep_alive = minor == 1;
    for l in lines {
        if headers.len() == MAX_HEADERS {
            return Parse::Reject(431);
        }
        let Some((name, value)) = l.split_once(':') else {
            return Parse::Reject(400);
        };
        if name.is_empty() || !name.bytes().all(is_token_char) {
            return Parse::Reject(400);
        }
        let value = value.trim_matches([' ', '\t']);
        if value.bytes().any(|c| (c < b' ' && c != b'\t') || c == 0x7f) {
            return Parse::Reject(400);
        }
        if name.eq_ignore_ascii_case("content-length") {
            let Some(n) = value
                .parse::<usize>()
                .ok()
                .filter(|_| value.bytes().all(|c| c.is_ascii_digit()))
            else {
                return Parse::Reject(400);
            };
            if content_length.is_some_and(|c| c != n) {
                return Parse::Reject(400);
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Parse::Reject(501);
        } else if name.eq_ignore_ascii_case("connection") {
            for opt in value.split(',').map(str::trim) {
                if opt.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if opt.eq_ignore_ascii_case("keep-alive") && minor == 0 {
                    keep_alive = true;
                }
            }
        }
        headers.push((name, value));
    }
    let len = content_length.unwrap_or(0);
    if len > max_body {
        return Parse::Reject(413);
    }
    let body_start = head_end + 4;
    if buf.len() - body_start < len {
        return Parse::Incomplete;
    }
    Parse::Done(Parsed {
        method,
        target,
        minor,
        headers,
        body: &buf[body_start..body_start + len],
        keep_alive,
        consumed: body_start + len,
    })
}

/// Compares without an early exit, so timing tells nothing about the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `req` carries `Authorization: Bearer TOKEN`.
fn authorized(p: &Parsed<'_>, token: Option<&str>) -> bool {
    let Some(token) = token else { return false };
    p.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("authorization"))
        .any(|(_, v)| {
            let mut it = v.splitn(2, ' ');
            let scheme = it.next().unwrap_or_default();
            let given = it.next().unwrap_or_default().trim();
            scheme.eq_ignore_ascii_case("bearer")
                && constant_time_eq(given.as_bytes(), token.as_bytes())
        })
}

/// Serializes a response (head, and the body unless `head_only`).
fn serialize(resp: &Response, keep_alive: bool, head_only: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(resp.body.len() + 160);
    let head = format!(
        "HTTP/1.1 {} {}\r\nServer: sluice\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {}\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        resp.body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    );
    out.extend_from_slice(head.as_bytes());
    for (n, v) in &resp.headers {
        // A handler's header must not split the response.
        if n.bytes().all(is_token_char) && !v.bytes().any(|c| c == b'\r' || c == b'\n') {
            out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(&resp.body);
    }
    out
}

/// One HTTP connection slot: a smoltcp socket and its buffers.
#[derive(Debug)]
struct Conn {
    handle: SocketHandle,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    sent: usize,
    /// Close once `out` is sent.
    close_after: bool,
    /// When the request now arriving started.
    since: Option<Instant>,
    /// Last byte in or out.
    last: Instant,
    /// The socket holds a connection (counted once).
    active: bool,
    peer: Option<SocketAddr>,
    /// When a graceful close began (aborted if it lingers).
    closing: Option<Instant>,
}

/// The HTTP service of one interface: a fixed set of listening sockets.
pub(crate) struct HttpServer {
    cfg: HttpConfig,
    conns: Vec<Conn>,
    counters: Arc<HttpCounters>,
}

fn smol_duration(d: Duration) -> smoltcp::time::Duration {
    smoltcp::time::Duration::from_micros(d.as_micros().min(u128::from(u64::MAX)) as u64)
}

impl HttpServer {
    /// Listening sockets added to `sockets`.
    pub(crate) fn new(
        cfg: HttpConfig,
        sockets: &mut SocketSet<'static>,
        counters: Arc<HttpCounters>,
        now: Instant,
    ) -> HttpServer {
        let conns = (0..cfg.max_connections)
            .map(|_| {
                let sock = tcp::Socket::new(
                    tcp::SocketBuffer::new(vec![0; 8 * 1024]),
                    tcp::SocketBuffer::new(vec![0; 64 * 1024]),
                );
                Conn {
                    handle: sockets.add(sock),
                    inbuf: Vec::new(),
                    out: Vec::new(),
                    sent: 0,
                    close_after: false,
                    since: None,
                    last: now,
                    active: false,
                    peer: None,
                    closing: None,
                }
            })
            .collect();
        HttpServer {
            cfg,
            conns,
            counters,
        }
    }

    /// Moves bytes between the sockets and the connection buffers, keeps
    /// sockets listening, enforces timeouts. Runs under the stack's lock;
    /// bounded work. Returns whether anything moved.
    pub(crate) fn exchange(&mut self, sockets: &mut SocketSet<'static>, now: Instant) -> bool {
        let limit = self.cfg.max_header_bytes + self.cfg.max_body_bytes;
        let mut moved = false;
        for c in &mut self.conns {
            let sock = sockets.get_mut::<tcp::Socket<'static>>(c.handle);
            if !sock.is_open() {
                // Closed or in TIME-WAIT: listen again (`listen` resets
                // the socket; a server slot need not sit out TIME-WAIT,
                // the peer's next connection has a new port).
                c.inbuf.clear();
                c.out.clear();
                c.sent = 0;
                c.close_after = false;
                c.since = None;
                c.active = false;
                c.peer = None;
                c.closing = None;
                let _ = sock.listen(self.cfg.port);
                continue;
            }
            if sock.state() == tcp::State::Listen || sock.state() == tcp::State::SynReceived {
                continue;
            }
            if !c.active {
                c.active = true;
                c.last = now;
                c.peer = sock
                    .remote_endpoint()
                    .map(|e| SocketAddr::new(IpAddr::from(e.addr), e.port));
                HttpCounters::add(&self.counters.connections);
                sock.set_keep_alive(Some(smoltcp::time::Duration::from_secs(10)));
                sock.set_timeout(Some(smoltcp::time::Duration::from_secs(60)));
            }
            if let Some(t) = c.closing {
                if now - t > smoltcp::time::Duration::from_secs(10) {
                    sock.abort();
                }
                continue;
            }
            while sock.can_recv() && c.inbuf.len() < limit {
                let room = limit - c.inbuf.len();
                let got = sock.recv(|b| {
                    let n = b.len().min(room);
                    (n, b[..n].to_vec())
                });
                match got {
                    Ok(b) if !b.is_empty() => {
                        if c.inbuf.is_empty() && c.since.is_none() {
                            c.since = Some(now);
                        }
                        c.inbuf.extend_from_slice(&b);
                        c.last = now;
                        moved = true;
                    }
                    _ => break,
                }
            }
            if c.sent < c.out.len() && sock.can_send() {
                if let Ok(n) = sock.send_slice(&c.out[c.sent..]) {
                    c.sent += n;
                    c.last = now;
                    moved |= n > 0;
                }
            }
            if c.sent == c.out.len() && !c.out.is_empty() {
                c.out.clear();
                c.sent = 0;
                c.last = now;
                if c.close_after {
                    sock.close();
                    c.closing = Some(now);
                    continue;
                }
            }
            let idle = c.out.is_empty() && c.inbuf.is_empty();
            if !sock.may_recv() && idle {
                // The peer finished and everything is answered.
                sock.close();
                c.closing = Some(now);
            } else if idle && now - c.last > smol_duration(self.cfg.idle_timeout) {
                sock.close();
                c.closing = Some(now);
            } else if c.out.is_empty()
                && c.since
                    .is_some_and(|s| now - s > smol_duration(self.cfg.request_timeout))
            {
                HttpCounters::add(&self.counters.rejected);
                HttpCounters::add(&self.counters.responses_4xx);
                c.out = serialize(&Response::error(408), false, false);
                c.sent = 0;
                c.close_after = true;
                c.inbuf.clear();
                c.since = None;
            }
        }
        moved
    }

    fn counters_reject(&self, status: u16) {
        HttpCounters::add(&self.counters.rejected);
        self.count_status(status);
    }

    fn count_status(&self, status: u16) {
        let c = match status {
            200..=299 => &self.counters.responses_2xx,
            400..=499 => &self.counters.responses_4xx,
            500..=599 => &self.counters.responses_5xx,
            _ => return,
        };
        HttpCounters::add(c);
    }

    /// Whether some connection has bytes to parse and nothing to send.
    pub(crate) fn has_work(&self) -> bool {
        self.conns
            .iter()
            .any(|c| c.out.is_empty() && !c.inbuf.is_empty() && !c.close_after)
    }

    /// Parses complete requests and answers them with `handler`. Runs
    /// without the stack's lock. Returns whether any response was made.
    pub(crate) fn serve(
        &mut self,
        handler: &mut dyn Handler,
        host: &HostStackStats,
        now: Instant,
    ) -> bool {
        let mut served = false;
        let token = self.cfg.token.clone();
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            if !c.out.is_empty() || c.inbuf.is_empty() || c.close_after {
                continue;
            }
            let peer = c
                .peer
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
            let (bytes, consumed, close) =
                match parse(&c.inbuf, self.cfg.max_header_bytes, self.cfg.max_body_bytes) {
                    Parse::Incomplete => continue,
                    Parse::Reject(status) => {
                        self.counters_reject(status);
                        (
                            serialize(&Response::error(status), false, false),
                            usize::MAX,
                            true,
                        )
                    }
                    Parse::Done(p) => {
                        let head_only = p.method == "HEAD";
                        let (path, query) = p.target.split_once('?').unwrap_or((p.target, ""));
                        let req = Request {
                            method: p.method,
                            target: p.target,
                            path,
                            query,
                            minor_version: p.minor,
                            headers: p.headers.clone(),
                            body: p.body,
                            peer,
                            host,
                        };
                        let resp = if req.changes_state() && !authorized(&p, token.as_deref()) {
                            HttpCounters::add(&self.counters.unauthorized);
                            Response::error(401)
                                .with_header("WWW-Authenticate", "Bearer realm=\"sluice\"")
                        } else {
                            HttpCounters::add(&self.counters.requests);
                            handler.handle(&req)
                        };
                        self.count_status(resp.status);
                        (
                            serialize(&resp, p.keep_alive, head_only),
                            p.consumed,
                            !p.keep_alive,
                        )
                    }
                };
            let c = &mut self.conns[i];
            if consumed >= c.inbuf.len() {
                c.inbuf.clear();
                c.since = None;
            } else {
                c.inbuf.drain(..consumed);
                c.since = Some(now);
            }
            c.out = bytes;
            c.sent = 0;
            c.close_after = close;
            served = true;
        }
        served
    }
}

impl HttpCounters {
    fn add(c: &std::sync::atomic::AtomicU64) {
        c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(p: Parse<'_>) -> Parsed<'_> {
        match p {
            Parse::Done(p) => p,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    #[test]
    fn parses_a_get_and_a_post_with_body() {
        let raw = b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
        let p = done(parse(raw, 8192, 1024));
        assert_eq!((p.method, p.target, p.minor), ("GET", "/metrics?x=1", 1));
        assert!(p.keep_alive);
        let rest = &raw[p.consumed..];
        let q = done(parse(rest, 8192, 1024));
        assert_eq!((q.method, q.body), ("POST", &b"abc"[..]));
        assert_eq!(q.consumed, rest.len());
    }

    #[test]
    fn waits_for_the_rest() {
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHost:", 8192, 1024),
            Parse::Incomplete
        ));
        assert!(matches!(
            parse(
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab",
                8192,
                1024
            ),
            Parse::Incomplete
        ));
    }

    #[test]
    fn refuses_what_it_must() {
        for (raw, status) in [
            (&b"GET / HTTP/2.0\r\n\r\n"[..], 400),
            (b"GET  / HTTP/1.1\r\n\r\n", 400),
            (b"GET http://x/ HTTP/1.1\r\n\r\n", 400),
            (b"G(T / HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nNoColon\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\n folded: x\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", 400),
            (
                b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                501,
            ),
            (b"POST / HTTP/1.1\r\nContent-Length: 2000\r\n\r\n", 413),
            (
                b"GET / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                400,
            ),
        ] {
            match parse(raw, 8192, 1024) {
                Parse::Reject(s) => assert_eq!(s, status, "{}", String::from_utf8_lossy(raw)),
                other => panic!("{}: {other:?}", String::from_utf8_lossy(raw)),
            }
        }
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
        assert!(matches!(
            parse(big.as_bytes(), 8192, 1024),
            Parse::Reject(431)
        ));
        assert!(matches!(
            parse("a".repeat(9000).as_bytes(), 8192, 1024),
            Parse::Reject(431)
        ));
        let many: String = (0..70).map(|i| format!("X{i}: y\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(matches!(
            parse(raw.as_bytes(), 8192, 1024),
            Parse::Reject(431)
        ));
    }

    #[test]
    fn connection_options() {
        let p = done(parse(
            b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
            8192,
            0,
        ));
        assert!(!p.keep_alive);
        let p = done(parse(b"GET / HTTP/1.0\r\n\r\n", 8192, 0));
        assert!(!p.keep_alive);
        let p = done(parse(
            b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
            8192,
            0,
        ));
        assert!(p.keep_alive);
    }

    #[test]
    fn tokens() {
        let with = |h: &'static [u8]| done(parse(h, 8192, 0));
        let p = with(b"POST / HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n\r\n");
        assert!(authorized(&p, Some("s3cret")));
        assert!(!authorized(&p, Some("s3cre")));
        assert!(!authorized(&p, Some("s3cret!")));
        assert!(!authorized(&p, None));
        let p = with(b"POST / HTTP/1.1\r\nAuthorization: Basic s3cret\r\n\r\n");
        assert!(!authorized(&p, Some("s3cret")));
        let p = with(b"POST / HTTP/1.1\r\n\r\n");
        assert!(!authorized(&p, Some("s3cret")));
    }

    #[test]
    fn responses_carry_length_and_no_injected_headers() {
        let r = Response::text(200, "hi").with_header("X-Bad", "a\r\nSet-Cookie: x");
        let s = String::from_utf8(serialize(&r, true, false)).unwrap();
        assert!(s.starts_with("HTTP/1.1 200 OK\r\n"), "{s}");
        assert!(s.contains("Content-Length: 2\r\n"));
        assert!(s.contains("Connection: keep-alive\r\n"));
        assert!(!s.contains("Set-Cookie"));
        assert!(s.ends_with("\r\n\r\nhi"));
        let h = String::from_utf8(serialize(&r, false, true)).unwrap();
        assert!(h.ends_with("\r\n\r\n") && h.contains("Content-Length: 2"));
    }

    #[test]
    fn routes() {
        let mut h = metrics_status(|_| "m 1\n".to_string(), |_| "{}".to_string());
        let host = HostStackStats::default();
        let req = |method, path| Request {
            method,
            target: path,
            path,
            query: "",
            minor_version: 1,
            headers: vec![],
            body: b"",
            peer: SocketAddr::from(([1, 2, 3, 4], 5)),
            host: &host,
        };
        let r = h.handle(&req("GET", "/metrics"));
        assert_eq!((r.status, r.body.as_slice()), (200, &b"m 1\n"[..]));
        assert_eq!(r.content_type, PROMETHEUS_CONTENT_TYPE);
        assert_eq!(
            h.handle(&req("GET", "/status")).content_type,
            "application/json"
        );
        assert_eq!(h.handle(&req("DELETE", "/metrics")).status, 405);
        assert_eq!(h.handle(&req("GET", "/nope")).status, 404);
    }
}
