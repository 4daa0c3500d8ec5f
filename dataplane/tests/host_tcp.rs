//! TCP through the dataplane to the host stack, without root. The peer is a
//! second smoltcp stack (a [`HostStack`] over the ring port's endpoint), so
//! every segment crosses a worker in both directions.
//!
//! Checked: `GET /metrics` returns Prometheus text with the dataplane's and
//! the host stack's counters; `GET /status` returns JSON; a state-changing
//! request without the token gets 401, with it reaches the handler; a
//! 10 MB transfer from the host stack's socket API to the peer arrives
//! complete and in order.

mod host_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use host_support::*;
use sluice_dataplane::host::{
    http, metrics, HostConfig, HostStack, HttpConfig, IoPort, SocketError, TcpOptions, TcpStream,
};
use sluice_dataplane::{Dataplane, IdlePolicy};
use sluice_drivers::ring::RingPort;

const TOKEN: &str = "let-me-in";

/// A dataplane on one ring port with a host stack at 10.0.0.1 serving
/// HTTP on 9100, and a peer stack at 10.0.0.2 on the endpoint.
fn setup(name: &str) -> (Arc<Dataplane>, HostStack, HostStack) {
    let (port, ep) = RingPort::with_endpoint(name, 1, 2048);
    let dp = Arc::new(
        Dataplane::builder()
            .port(port)
            .host_stack(true)
            .pass_queue(2048)
            .idle(IdlePolicy::Adaptive)
            .start()
            .expect("dataplane starts"),
    );
    let handler = {
        let dp = dp.clone();
        let dp2 = dp.clone();
        http::metrics_status(
            move |host| metrics::render(&dp.stats(), Some(host)),
            move |host| {
                format!(
                    "{{\"ports\":{},\"host_rx\":{}}}",
                    dp2.stats().ports.len(),
                    host.total().rx_frames
                )
            },
        )
    };
    let cfg = HostConfig::default()
        .with_address("10.0.0.1/24".parse().unwrap())
        .with_http(HttpConfig {
            token: Some(TOKEN.into()),
            ..HttpConfig::default()
        });
    let host = HostStack::start(dp.host_ports(), cfg, Some(Box::new(handler))).unwrap();
    let peer = HostStack::start_with_io(
        vec![IoPort {
            name: "peer".into(),
            ifindex: 1,
            io: Box::new(EndpointIo(Arc::new(ep))),
        }],
        HostConfig::default().with_address("10.0.0.2/24".parse().unwrap()),
        None,
    )
    .unwrap();
    (dp, host, peer)
}

fn connect(peer: &HostStack, to: &str) -> TcpStream {
    let s = peer.tcp_connect(to.parse().unwrap()).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || s.is_connected()),
        "handshake with {to}: {:?}",
        s.state()
    );
    s
}

fn send_all(s: &TcpStream, mut data: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !data.is_empty() {
        match s.send(data) {
            Ok(n) => data = &data[n..],
            Err(SocketError::WouldBlock) => std::thread::sleep(Duration::from_micros(200)),
            Err(e) => panic!("send: {e}"),
        }
        assert!(Instant::now() < deadline, "send timed out");
    }
}

/// Reads until the peer closes, or until `until` says the bytes so far are
/// a whole answer.
fn read_until(s: &TcpStream, until: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16384];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match s.recv(&mut buf) {
            Ok(0) => return out,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if until(&out) {
                    return out;
                }
            }
            Err(SocketError::WouldBlock) => std::thread::sleep(Duration::from_micros(200)),
            Err(e) => panic!("recv: {e}"),
        }
        assert!(
            Instant::now() < deadline,
            "no full answer: {:?}",
            String::from_utf8_lossy(&out)
        );
    }
}

/// Whether `b` holds a whole response (head and Content-Length body).
fn whole_response(b: &[u8]) -> bool {
    let Some(end) = b.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&b[..end]).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    b.len() >= end + 4 + len
}

fn request(peer: &HostStack, raw: &str) -> String {
    let s = connect(peer, "10.0.0.1:9100");
    send_all(&s, raw.as_bytes());
    let r = read_until(&s, whole_response);
    String::from_utf8(r).unwrap()
}

#[test]
fn http_get_metrics_returns_prometheus_text() {
    let (dp, host, peer) = setup("tcp-metrics");
    let r = request(
        &peer,
        "GET /metrics HTTP/1.1\r\nHost: sluice\r\nConnection: close\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    assert!(r.contains("Content-Type: text/plain; version=0.0.4"), "{r}");
    assert!(
        r.contains("# TYPE sluice_port_rx_packets_total counter"),
        "{r}"
    );
    assert!(
        r.contains("sluice_port_rx_packets_total{port=\"tcp-metrics\"} "),
        "{r}"
    );
    assert!(r.contains("sluice_port_verdicts_total{"), "{r}");
    assert!(r.contains("sluice_host_rx_frames_total{"), "{r}");
    // The counters are read as the request is served: this one not yet.
    assert!(r.contains("sluice_http_requests_total 0\n"), "{r}");

    let r = request(&peer, "GET /status HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    assert!(
        r.contains("application/json") && r.contains("{\"ports\":1,"),
        "{r}"
    );

    // Keep-alive: two requests on one connection.
    let s = connect(&peer, "10.0.0.1:9100");
    send_all(
        &s,
        b"HEAD /metrics HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\n",
    );
    let two = read_until(&s, |b| {
        String::from_utf8_lossy(b).contains("404 Not Found\r\n") && {
            let t = String::from_utf8_lossy(b);
            t.ends_with("404 Not Found\n")
        }
    });
    let t = String::from_utf8(two).unwrap();
    assert!(t.starts_with("HTTP/1.1 200 OK\r\n"), "{t}");
    assert!(!t.contains("# TYPE"), "HEAD carries no body: {t}");
    assert!(t.contains("HTTP/1.1 404 Not Found\r\n"), "{t}");
    drop(s);

    let stats = host.stop();
    assert!(stats.http.connections >= 3);
    assert_eq!(stats.http.responses_2xx, 3);
    drop(peer);
    drop(dp);
}

#[test]
fn changes_need_the_token() {
    let (dp, host, peer) = setup("tcp-token");
    let r = request(
        &peer,
        "POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
    );
    assert!(r.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{r}");
    assert!(r.contains("WWW-Authenticate: Bearer"), "{r}");
    let r = request(
        &peer,
        "DELETE /metrics HTTP/1.1\r\nAuthorization: Bearer wrong\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    // With the token the request reaches the handler (which has no POST).
    let r = request(
        &peer,
        &format!(
            "POST /metrics HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 0\r\n\r\n"
        ),
    );
    assert!(r.starts_with("HTTP/1.1 405"), "{r}");
    // Garbage gets 400 and a closed connection.
    let s = connect(&peer, "10.0.0.1:9100");
    send_all(&s, b"NOT HTTP AT ALL\r\n\r\n");
    let r = String::from_utf8(read_until(&s, |_| false)).unwrap();
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    let stats = host.stop();
    assert_eq!(stats.http.unauthorized, 2);
    assert_eq!(stats.http.rejected, 1);
    drop(peer);
    drop(dp);
}

/// The byte at offset `i` of the transfer.
fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

#[test]
fn ten_megabytes_from_the_host_stack_arrive_intact() {
    const SIZE: usize = 10 * 1024 * 1024;
    let (dp, host, peer) = setup("tcp-10mb");
    let opts = TcpOptions {
        rx_buffer: 256 * 1024,
        tx_buffer: 256 * 1024,
        ..TcpOptions::default()
    };
    let listener = host
        .tcp_listen_with("10.0.0.1:8080".parse().unwrap(), opts)
        .unwrap();
    let client = peer
        .tcp_connect_with("10.0.0.1:8080".parse().unwrap(), opts)
        .unwrap();
    let server = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        let (conn, from) = loop {
            match listener.accept() {
                Ok(c) => break c,
                Err(SocketError::WouldBlock) => std::thread::sleep(Duration::from_micros(200)),
                Err(e) => panic!("accept: {e}"),
            }
            assert!(Instant::now() < deadline, "no connection");
        };
        assert_eq!(from.ip().to_string(), "10.0.0.2");
        let data: Vec<u8> = (0..SIZE).map(pattern).collect();
        let mut off = 0;
        let deadline = Instant::now() + Duration::from_secs(120);
        while off < SIZE {
            match conn.send(&data[off..]) {
                Ok(n) => off += n,
                Err(SocketError::WouldBlock) => std::thread::sleep(Duration::from_micros(50)),
                Err(e) => panic!("send at {off}: {e}"),
            }
            assert!(Instant::now() < deadline, "sending stalled at {off}");
        }
        conn.close();
        // Dropping closes gracefully: the stack finishes sending.
        drop(conn);
        listener
    });
    let started = Instant::now();
    let mut got = 0usize;
    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match client.recv(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                for (k, b) in buf[..n].iter().enumerate() {
                    assert_eq!(*b, pattern(got + k), "byte {} differs", got + k);
                }
                got += n;
            }
            Err(SocketError::WouldBlock) => std::thread::sleep(Duration::from_micros(50)),
            Err(e) => panic!("recv after {got} bytes: {e}"),
        }
        assert!(Instant::now() < deadline, "transfer stalled at {got} bytes");
    }
    let secs = started.elapsed().as_secs_f64();
    let _listener = server.join().unwrap();
    assert_eq!(got, SIZE, "every byte arrived");
    eprintln!(
        "10 MB in {secs:.2} s ({:.1} MB/s) through the dataplane",
        SIZE as f64 / secs / 1e6
    );
    let s = host.stop();
    let c = s.ports[0].counters;
    assert_eq!(
        c.tx_queue_full, 0,
        "no segment lost to a full host TX queue"
    );
    assert_eq!(c.rx_dropped(), 0);
    drop(peer);
    let d = Arc::try_unwrap(dp)
        .ok()
        .expect("the handler released the dataplane")
        .stop();
    assert_eq!(d.ports[0].total.pass_full, 0);
}
