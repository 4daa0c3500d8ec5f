//! The host stack against real Linux tools (tier 4: root, in CI). Sluice
//! runs an AF_XDP port on the host end of a veth pair; the peer end lives
//! in a network namespace with the kernel's own stack, where `ping`,
//! `arping` and `curl` talk to the host stack's address.
//!
//! Checked: `ping` answered by smoltcp; `arping` answered with the port's
//! MAC; `curl /metrics` returns Prometheus text, a POST without the token
//! gets 401; a program that drops UDP and passes ICMP drops datagrams sent
//! with the kernel's UDP and still answers ping; a 10 MB transfer from the
//! host stack's socket API to `curl` arrives with the right bytes.
//!
//! Without root each test prints a loud SKIPPED line (with `CI=true` it
//! fails instead). Without the AF_XDP driver in this build (the
//! `sluice-drivers/afxdp` feature) each test says so and skips, in CI too:
//! that is a build choice, not a missing privilege. Needs `ip`, `ping`,
//! `arping` (iputils-arping), `curl` and `ethtool`.

mod host_support;

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_bpf::asm::assemble;
use sluice_bpf::helpers::Registry;
use sluice_bpf::Program;
use sluice_dataplane::host::{http, metrics, HostConfig, HostStack, HttpConfig, SocketError};
use sluice_dataplane::{Dataplane, Hook, IdlePolicy};
use sluice_drivers::spec::{self, PortSpec};

const TOKEN: &str = "real-token";

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn loud_skip(test: &str, why: &str) {
    eprintln!();
    eprintln!("**************************************************************");
    eprintln!("SKIPPED: {test}: {why}");
    eprintln!("**************************************************************");
    eprintln!();
}

fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Whether the test can run: root, the tools, and the AF_XDP driver.
fn preflight(test: &str, tools: &[&str]) -> bool {
    if !is_root() {
        assert!(
            !in_ci(),
            "{test}: needs root (namespaces, veth, AF_XDP), and CI=true"
        );
        loud_skip(test, "needs root (network namespaces, veth, AF_XDP)");
        return false;
    }
    for t in tools {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            assert!(!in_ci(), "{test}: `{t}` is not installed, and CI=true");
            loud_skip(test, &format!("`{t}` is not installed"));
            return false;
        }
    }
    if PortSpec::parse("afxdp:lo").is_err() {
        loud_skip(
            test,
            "this build has no AF_XDP driver (sluice-drivers/afxdp)",
        );
        return false;
    }
    true
}

fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "`{}` failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A namespace holding the peer end of a veth pair whose host end Sluice
/// owns; both removed on drop.
struct Net {
    ns: String,
    host: String,
    peer: String,
    /// Third octet of this pair's 10.77.N.0/24.
    net: u32,
}

impl Net {
    fn new() -> Net {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let net = Net {
            ns: format!("sluice-h-{pid}-{n}"),
            host: format!("slh{pid}h{n}"),
            peer: format!("slh{pid}p{n}"),
            net: 100 + n,
        };
        run(&["ip", "netns", "add", &net.ns]);
        run(&[
            "ip", "link", "add", &net.host, "type", "veth", "peer", "name", &net.peer,
        ]);
        run(&["ip", "link", "set", &net.peer, "netns", &net.ns]);
        let _ = Command::new("sysctl")
            .args(["-qw", &format!("net.ipv6.conf.{}.disable_ipv6=1", net.host)])
            .output();
        net.exec(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{}.disable_ipv6=1", net.peer),
        ]);
        net.exec_ok(&["ip", "link", "set", "lo", "up"]);
        net.exec_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", net.peer_ip()),
            "dev",
            &net.peer,
        ]);
        net.exec_ok(&["ip", "link", "set", &net.peer, "up"]);
        // The kernel leaves TCP checksums to the "hardware" on a veth
        // (CHECKSUM_PARTIAL); a frame redirected to AF_XDP carries them
        // unfinished, and the host stack rightly drops it. A real NIC
        // finishes them; here the peer computes them in software.
        net.exec_ok(&["ethtool", "-K", &net.peer, "tx", "off"]);
        run(&["ip", "link", "set", &net.host, "up"]);
        net
    }

    fn host_ip(&self) -> String {
        format!("10.77.{}.1", self.net)
    }

    fn peer_ip(&self) -> String {
        format!("10.77.{}.2", self.net)
    }

    fn exec(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .args(args)
            .output()
            .expect("ip netns exec")
    }

    fn exec_ok(&self, args: &[&str]) -> Output {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "`{}` in {} failed: {}{}",
            args.join(" "),
            self.ns,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host])
            .output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

/// Sluice on the host end: an AF_XDP port, a host stack at .1 serving
/// HTTP on 9100.
struct Sluice {
    host: Option<HostStack>,
    dp: Option<Arc<Dataplane>>,
    net: Net,
}

impl Sluice {
    fn start(program: Option<Arc<Program>>) -> Sluice {
        let net = Net::new();
        let spec = PortSpec::parse(&format!("afxdp:{}", net.host)).unwrap();
        let ports = spec::open(&[spec]).expect("AF_XDP port opens");
        let mut b = Dataplane::builder()
            .port(ports[0].clone())
            .host_stack(true)
            .idle(IdlePolicy::Adaptive);
        if let Some(p) = program {
            b = b.program(0, Hook::Ingress, p, "test");
        }
        let dp = Arc::new(b.start().expect("dataplane starts"));
        let handler = {
            let dp = dp.clone();
            http::metrics_status(
                move |h| metrics::render(&dp.stats(), Some(h)),
                |_| "{}".to_string(),
            )
        };
        let cfg = HostConfig::default()
            .with_address(format!("{}/24", net.host_ip()).parse().unwrap())
            .with_http(HttpConfig {
                token: Some(TOKEN.into()),
                ..HttpConfig::default()
            });
        let host = HostStack::start(dp.host_ports(), cfg, Some(Box::new(handler))).unwrap();
        Sluice {
            host: Some(host),
            dp: Some(dp),
            net,
        }
    }

    fn host(&self) -> &HostStack {
        self.host.as_ref().expect("running")
    }

    fn dp(&self) -> &Dataplane {
        self.dp.as_ref().expect("running")
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        // The host thread holds the dataplane (through the handler): it
        // goes first, then the dataplane, then the interfaces.
        drop(self.host.take());
        drop(self.dp.take());
    }
}

fn ping(s: &Sluice, count: &str) -> String {
    let out = s.net.exec(&[
        "ping",
        "-c",
        count,
        "-i",
        "0.2",
        "-W",
        "2",
        &s.net.host_ip(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "ping failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn ping_is_answered_by_the_host_stack() {
    if !preflight(
        "ping_is_answered_by_the_host_stack",
        &["ip", "ping", "ethtool"],
    ) {
        return;
    }
    let s = Sluice::start(None);
    let text = ping(&s, "3");
    assert!(text.contains("3 received"), "{text}");
    let st = s.host().stats().ports[0].counters;
    assert!(st.rx_frames >= 4, "ARP and 3 echo requests: {st:?}");
    assert!(st.tx_frames >= 4);
}

#[test]
fn arping_is_answered_with_the_ports_mac() {
    if !preflight(
        "arping_is_answered_with_the_ports_mac",
        &["ip", "arping", "ethtool"],
    ) {
        return;
    }
    let s = Sluice::start(None);
    let mac = s.host().mac(0).unwrap().to_string();
    let out = s.net.exec_ok(&[
        "arping",
        "-c",
        "2",
        "-w",
        "5",
        "-I",
        &s.net.peer,
        &s.net.host_ip(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(text.contains(&mac), "arping shows {mac}: {text}");
    let kernel_mac = std::fs::read_to_string(format!("/sys/class/net/{}/address", s.net.host))
        .unwrap_or_default();
    assert_eq!(mac, kernel_mac.trim(), "the stack uses the NIC's own MAC");
}

#[test]
fn curl_gets_metrics_and_a_change_without_token_gets_401() {
    if !preflight("curl_gets_metrics", &["ip", "curl", "ethtool"]) {
        return;
    }
    let s = Sluice::start(None);
    let url = format!("http://{}:9100/metrics", s.net.host_ip());
    let out = s.net.exec_ok(&["curl", "-sS", "--max-time", "10", &url]);
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        body.contains("# TYPE sluice_port_rx_packets_total counter"),
        "{body}"
    );
    assert!(
        body.contains(&format!(
            "sluice_port_rx_packets_total{{port=\"afxdp:{}\"}}",
            s.net.host
        )),
        "{body}"
    );
    assert!(body.contains("sluice_host_rx_frames_total{"), "{body}");
    let code = |extra: &[&str]| {
        let mut a = vec![
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ];
        a.extend_from_slice(extra);
        a.push(&url);
        String::from_utf8_lossy(&s.net.exec(&a).stdout).into_owned()
    };
    assert_eq!(code(&["-X", "POST"]), "401");
    let auth = format!("Authorization: Bearer {TOKEN}");
    assert_eq!(
        code(&["-X", "POST", "-H", &auth]),
        "405",
        "token accepted, no POST route"
    );
}

fn drop_udp() -> Arc<Program> {
    let src = "ldxw %r2, [%r1+0]\n\
               ldxw %r3, [%r1+4]\n\
               mov %r4, %r2\n\
               add %r4, 34\n\
               jgt %r4, %r3, pass\n\
               ldxh %r5, [%r2+12]\n\
               jne %r5, 0x0008, pass\n\
               ldxb %r5, [%r2+23]\n\
               jne %r5, 17, pass\n\
               mov %r0, 1\n\
               exit\n\
               pass:\n\
               mov %r0, 2\n\
               exit";
    Arc::new(Program::load(assemble(src).unwrap(), &Registry::xdp()).unwrap())
}

#[test]
fn a_program_that_drops_udp_still_lets_ping_through() {
    if !preflight(
        "a_program_that_drops_udp",
        &["ip", "ping", "bash", "ethtool"],
    ) {
        return;
    }
    let s = Sluice::start(Some(drop_udp()));
    let sock = s
        .host()
        .udp_bind(format!("{}:7000", s.net.host_ip()).parse().unwrap())
        .unwrap();
    for _ in 0..5 {
        s.net.exec_ok(&[
            "bash",
            "-c",
            &format!("echo hello > /dev/udp/{}/7000", s.net.host_ip()),
        ]);
    }
    let text = ping(&s, "2");
    assert!(text.contains("2 received"), "{text}");
    let mut buf = [0u8; 64];
    assert_eq!(sock.recv_from(&mut buf), Err(SocketError::WouldBlock));
    let t = s.dp().stats().ports[0].total;
    assert!(t.xdp_drop >= 5, "the program dropped the datagrams: {t:?}");
}

fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

#[test]
fn ten_megabytes_to_curl() {
    const SIZE: usize = 10 * 1024 * 1024;
    if !preflight("ten_megabytes_to_curl", &["ip", "curl", "ethtool"]) {
        return;
    }
    let s = Sluice::start(None);
    let listener = s
        .host()
        .tcp_listen(format!("{}:8080", s.net.host_ip()).parse().unwrap())
        .unwrap();
    let server = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let (conn, _) = loop {
            match listener.accept() {
                Ok(c) => break c,
                Err(SocketError::WouldBlock) => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => panic!("accept: {e}"),
            }
            assert!(Instant::now() < deadline, "curl never connected");
        };
        // Read the request head.
        let mut req = Vec::new();
        let mut buf = [0u8; 2048];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            match conn.recv(&mut buf) {
                Ok(0) => panic!("curl closed early"),
                Ok(n) => req.extend_from_slice(&buf[..n]),
                Err(SocketError::WouldBlock) => std::thread::sleep(Duration::from_micros(100)),
                Err(e) => panic!("recv: {e}"),
            }
            assert!(Instant::now() < deadline, "no request");
        }
        let mut data = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {SIZE}\r\nConnection: close\r\n\r\n"
        )
        .into_bytes();
        data.extend((0..SIZE).map(pattern));
        let mut off = 0;
        let deadline = Instant::now() + Duration::from_secs(120);
        while off < data.len() {
            match conn.send(&data[off..]) {
                Ok(n) => off += n,
                Err(SocketError::WouldBlock) => std::thread::sleep(Duration::from_micros(50)),
                Err(e) => panic!("send at {off}: {e}"),
            }
            assert!(Instant::now() < deadline, "stalled at {off}");
        }
        conn.close();
        listener
    });
    let file = format!("/tmp/sluice-host-10mb-{}", std::process::id());
    let url = format!("http://{}:8080/", s.net.host_ip());
    let started = Instant::now();
    s.net
        .exec_ok(&["curl", "-sS", "--max-time", "120", "-o", &file, &url]);
    let secs = started.elapsed().as_secs_f64();
    let _listener = server.join().unwrap();
    let got = std::fs::read(&file).unwrap();
    let _ = std::fs::remove_file(&file);
    assert_eq!(got.len(), SIZE);
    assert!(
        got.iter().enumerate().all(|(i, b)| *b == pattern(i)),
        "the bytes curl got differ from what was sent"
    );
    eprintln!(
        "10 MB to curl in {secs:.2} s ({:.1} MB/s)",
        SIZE as f64 / secs / 1e6
    );
}
