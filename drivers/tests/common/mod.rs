//! Test helpers for the real-kernel AF_XDP tests (tier 4): network
//! namespaces and veth pairs owned by RAII guards, and raw AF_PACKET
//! sockets that run inside a namespace.
//!
//! Every guard removes what it created when dropped — also while a failing
//! test unwinds. Names carry the creating process's id (`slt<pid>...` for
//! interfaces, `sluice-t-<pid>-N` for namespaces), so leftovers of a killed
//! run are recognised and removed by [`cleanup_stale`] at the next start.
//! No traffic leaves the namespaces and veth pairs a test made.
//!
//! Also used by `dataplane/tests/afxdp_*.rs` through `#[path]`.

#![allow(dead_code, unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Whether this process runs with effective uid 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Prints a loud SKIPPED line, or fails when `CI=true` (CI runs as root).
/// Returns whether the caller should go on.
pub fn require_root(test: &str) -> bool {
    if is_root() {
        cleanup_stale();
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: needs root (network namespaces, veth, AF_XDP), and CI=true");
    }
    eprintln!();
    eprintln!("**************************************************************");
    eprintln!("SKIPPED: {test}: needs root (network namespaces, veth, AF_XDP)");
    eprintln!("**************************************************************");
    eprintln!();
    false
}

/// Runs a command; panics with its output if it fails.
pub fn run(args: &[&str]) -> Output {
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

/// Runs a command, ignoring failure; returns whether it succeeded.
pub fn try_run(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes namespaces and interfaces that a test process which no longer
/// runs left behind.
pub fn cleanup_stale() {
    if let Ok(dir) = std::fs::read_dir("/var/run/netns") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name
                .strip_prefix("sluice-t-")
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<u32>().ok())
            {
                if !pid_alive(pid) {
                    try_run(&["ip", "netns", "del", &name]);
                }
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir("/sys/class/net") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name
                .strip_prefix("slt")
                .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|p| p.parse::<u32>().ok())
            {
                if !pid_alive(pid) {
                    try_run(&["ip", "link", "del", &name]);
                }
            }
        }
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

fn next() -> u32 {
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates a namespace with its loopback up.
    pub fn new() -> NetNs {
        let name = format!("sluice-t-{}-{}", std::process::id(), next());
        run(&["ip", "netns", "add", &name]);
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NS ARGS...`, which must succeed.
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend_from_slice(args);
        run(&v)
    }

    /// `ip netns exec NS ARGS...` (not checked).
    pub fn exec(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec {}: {e}", self.name))
    }

    /// Runs `f` on a thread that has entered this namespace.
    pub fn enter<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: setns on this thread only (CLONE_NEWNET); the fd is open.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns {path}: {}", io::Error::last_os_error());
            f()
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        try_run(&["ip", "netns", "del", &self.name]);
    }
}

/// A veth pair: `host` in this namespace, `peer` moved into a [`NetNs`].
/// Deleting the host end deletes both; done on drop.
#[derive(Debug)]
pub struct Veth {
    /// The end in the test's namespace (Sluice's side).
    pub host: String,
    /// The end in the peer namespace.
    pub peer: String,
    /// MAC of the host end.
    pub host_mac: [u8; 6],
    /// MAC of the peer end.
    pub peer_mac: [u8; 6],
}

fn read_mac(text: &str) -> [u8; 6] {
    let mut m = [0u8; 6];
    for (o, p) in m.iter_mut().zip(text.trim().split(':')) {
        *o = u8::from_str_radix(p, 16).expect("MAC");
    }
    m
}

impl Veth {
    /// A pair with `queues` RX and TX queues on each end, IPv6 off (no
    /// router solicitations or other noise), both ends up.
    pub fn new(ns: &NetNs, queues: u16) -> Veth {
        let n = next();
        let pid = std::process::id();
        let host = format!("slt{pid}h{n}");
        let peer = format!("slt{pid}p{n}");
        let q = queues.to_string();
        run(&[
            "ip",
            "link",
            "add",
            &host,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
        ]);
        let mut v = Veth {
            host: host.clone(),
            peer: peer.clone(),
            host_mac: [0; 6],
            peer_mac: [0; 6],
        };
        run(&["ip", "link", "set", &peer, "netns", ns.name()]);
        for (sysctl, ns_side) in [
            (format!("net.ipv6.conf.{host}.disable_ipv6=1"), false),
            (format!("net.ipv6.conf.{peer}.disable_ipv6=1"), true),
        ] {
            if ns_side {
                ns.exec(&["sysctl", "-qw", &sysctl]);
            } else {
                try_run(&["sysctl", "-qw", &sysctl]);
            }
        }
        run(&["ip", "link", "set", &host, "up"]);
        ns.ip(&["link", "set", &peer, "up"]);
        v.host_mac = read_mac(
            &std::fs::read_to_string(format!("/sys/class/net/{host}/address")).expect("host MAC"),
        );
        let out = ns.exec(&["cat", &format!("/sys/class/net/{peer}/address")]);
        v.peer_mac = read_mac(&String::from_utf8_lossy(&out.stdout));
        v
    }

    /// Waits until both ends report carrier (veth needs both up).
    pub fn wait_up(&self, ns: &NetNs) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let host = std::fs::read_to_string(format!("/sys/class/net/{}/operstate", self.host))
                .unwrap_or_default();
            let peer = ns.exec(&["cat", &format!("/sys/class/net/{}/operstate", self.peer)]);
            if host.trim() == "up" && String::from_utf8_lossy(&peer.stdout).trim() == "up" {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("veth {} did not come up", self.host);
    }

    /// The XDP program attached to the host end, as `ip -d link` shows it
    /// (empty when none).
    pub fn host_xdp(&self) -> String {
        xdp_of(&self.host)
    }
}

/// The `prog/xdp` part of `ip -d link show dev IF` (empty when none).
pub fn xdp_of(iface: &str) -> String {
    let out = Command::new("ip")
        .args(["-d", "link", "show", "dev", iface])
        .output()
        .expect("ip link");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("prog/xdp") || l.trim_start().starts_with("xdp"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits (up to 3 s) until `iface` has no XDP program; returns whether
/// it has none. Closing a BPF link detaches at once unless a process
/// another test thread is forking at that moment holds a copy of the
/// descriptor until its `exec` closes it (close-on-exec), so a test that
/// checks right after dropping a port polls briefly.
pub fn wait_no_xdp(iface: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if xdp_of(iface).is_empty() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        try_run(&["ip", "link", "del", &self.host]);
    }
}

/// The test frames' EtherType (IEEE 802 local experimental 1).
pub const TEST_ETHERTYPE: u16 = 0x88b5;
/// Marks a test frame (bytes 14..18).
pub const MAGIC: [u8; 4] = *b"SLCE";

/// A test frame `len` bytes long: `dst`, `src`, [`TEST_ETHERTYPE`],
/// [`MAGIC`], then `seq` as 8 little-endian bytes, then a pattern.
pub fn test_frame(dst: [u8; 6], src: [u8; 6], seq: u64, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len.max(26)];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&TEST_ETHERTYPE.to_be_bytes());
    f[14..18].copy_from_slice(&MAGIC);
    f[18..26].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in f[26..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(13);
    }
    f
}

/// An IPv4/UDP test frame (so that a multi-queue sender hashes it by
/// flow): `10.254.0.1:sport` to `10.254.0.2:9`, payload [`MAGIC`] and
/// `seq`. The addresses never leave the test's veth pair.
pub fn udp_test_frame(dst: [u8; 6], src: [u8; 6], seq: u64, sport: u16) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 8 + 12 + 10];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip_len = (f.len() - 14) as u16;
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[10, 254, 0, 1]);
    ip[16..20].copy_from_slice(&[10, 254, 0, 2]);
    let sum = ip
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum::<u32>();
    let sum = (sum & 0xffff) + (sum >> 16);
    let csum = !((sum & 0xffff) + (sum >> 16)) as u16;
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    let udp_len = ip_len - 20;
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&9u16.to_be_bytes());
    f[38..40].copy_from_slice(&udp_len.to_be_bytes());
    f[42..46].copy_from_slice(&MAGIC);
    f[46..54].copy_from_slice(&seq.to_le_bytes());
    f
}

/// The sequence number of a test frame (either kind), or `None` for other
/// traffic.
pub fn test_seq(f: &[u8]) -> Option<u64> {
    if f.len() >= 26 && f[12..14] == TEST_ETHERTYPE.to_be_bytes() && f[14..18] == MAGIC {
        return Some(u64::from_le_bytes(f[18..26].try_into().ok()?));
    }
    if f.len() >= 54 && f[12..14] == [8, 0] && f[23] == 17 && f[42..46] == MAGIC {
        return Some(u64::from_le_bytes(f[46..54].try_into().ok()?));
    }
    None
}

/// A raw AF_PACKET socket bound to one interface of the calling thread's
/// namespace.
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

const PACKET_OUTGOING: u8 = 4;

impl PacketSocket {
    /// Opens and binds a socket on `iface`, receiving every protocol, with
    /// a receive timeout of `timeout` and a large receive buffer.
    pub fn open(iface: &str, timeout: Duration) -> io::Result<PacketSocket> {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2).
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let name = CString::new(iface).expect("name");
        // SAFETY: NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: zeroed sockaddr_ll is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex;
        // SAFETY: sll is a valid sockaddr_ll of the given size.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: timeout.subsec_micros() as libc::suseconds_t,
        };
        let buf: libc::c_int = 16 << 20;
        // SAFETY: a valid option value of the right size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        // SAFETY: as above.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                &buf as *const libc::c_int as *const libc::c_void,
                4,
            )
        };
        Ok(PacketSocket { fd, ifindex })
    }

    /// Sends one frame.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: the buffer is valid for its length.
        let r = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receives one incoming frame into `buf` (outgoing copies of our own
    /// frames are skipped); `None` on timeout.
    pub fn recv(&self, buf: &mut [u8]) -> Option<usize> {
        loop {
            // SAFETY: zeroed sockaddr_ll is valid.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: buf and sll are valid for the lengths given.
            let r = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    &mut sll as *mut libc::sockaddr_ll as *mut libc::sockaddr,
                    &mut len,
                )
            };
            if r < 0 {
                return None;
            }
            if sll.sll_pkttype == PACKET_OUTGOING {
                continue;
            }
            return Some(r as usize);
        }
    }

    /// The interface index it is bound to.
    pub fn ifindex(&self) -> i32 {
        self.ifindex
    }
}

/// Sends `count` test frames from `iface` (in the calling thread's
/// namespace) with at most `window` unanswered at a time, collecting the
/// answers until every one came back or `timeout` passes; `check` sees
/// each answered frame. Returns the sequence numbers received.
pub fn ping_pong(
    sock: &PacketSocket,
    count: u64,
    window: u64,
    timeout: Duration,
    mut make: impl FnMut(u64) -> Vec<u8>,
    mut check: impl FnMut(&[u8]),
) -> Vec<u64> {
    let mut got = Vec::with_capacity(count as usize);
    let mut sent = 0u64;
    let mut buf = vec![0u8; 4096];
    let deadline = Instant::now() + timeout;
    while (got.len() as u64) < count && Instant::now() < deadline {
        while sent < count && sent - (got.len() as u64) < window {
            sock.send(&make(sent)).expect("send");
            sent += 1;
        }
        if let Some(n) = sock.recv(&mut buf) {
            let f = &buf[..n];
            if let Some(seq) = test_seq(f) {
                check(f);
                got.push(seq);
            }
        }
    }
    got
}
