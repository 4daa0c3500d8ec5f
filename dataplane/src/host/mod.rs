//! The host stack: a userspace TCP/IP stack (smoltcp) that owns the
//! dataplane's own addresses, so an appliance whose NICs belong to Sluice
//! still answers ARP, NDP and ping, serves its metrics and control API over
//! HTTP, and lets an embedding NFV program open TCP and UDP sockets.
//!
//! # How traffic reaches it
//!
//! ```text
//! worker ── XDP_PASS ──▶ PASS queue (bounded, per port) ──▶ host thread
//!                                                            │ smoltcp Interface per port
//!                                                            │ HTTP server, sockets, DHCP
//! worker ◀── drains ─── host TX queue (bounded, per port) ◀──┘
//! ```
//!
//! Workers never wait for the host stack: when a PASS queue is full the
//! worker drops the frame and counts `pass_full`; worker 0 moves host TX
//! frames to the ports' TX bursts in its loop. The host thread polls the
//! PASS queues (the workers make no syscall to wake it), sleeping at most
//! [`HostConfig::max_sleep`] when idle. What the host stack itself drops is
//! counted by reason in [`HostPortSnapshot`]: malformed frames, bad
//! checksums, EtherTypes it does not speak, unicast for other MACs, ports
//! without an address, a full host TX queue, an empty transmit pool.
//!
//! # Pieces
//!
//! * [`config`]: `--host-ip ADDR/PREFIX[@PORT]`, gateways, DHCPv4, HTTP.
//! * [`device`]: the smoltcp device over a port's queues, with the checks
//!   that count malformed frames.
//! * [`stack`]: the interfaces and sockets, polled by whoever holds them.
//! * [`HostStack`]: a [`Stack`] on its own thread, and the handle the
//!   socket API ([`sockets`]) works through.
//! * [`http`]: the HTTP/1.1 server; [`metrics`]: the Prometheus text.
//!
//! # Starting one
//!
//! The dataplane must be built with [`Builder::host_stack`](crate::Builder::host_stack)
//! `(true)`, or programs' PASS traffic is counted as `pass_no_stack` and
//! never reaches the stack.
//!
//! ```no_run
//! use sluice_dataplane::host::{HostConfig, HostStack};
//! # fn demo(dp: &sluice_dataplane::Dataplane) -> Result<(), Box<dyn std::error::Error>> {
//! // 10.0.0.1/24 on port 0: ARP and ping answered from now on.
//! let host = HostStack::start(
//!     dp.host_ports(),
//!     HostConfig::default().with_address("10.0.0.1/24".parse()?),
//!     None,
//! )?;
//! # Ok(()) }
//! ```

pub mod config;
pub mod device;
pub mod http;
pub mod metrics;
pub mod sockets;
pub mod stack;
pub mod stats;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

pub use config::{Cidr, Gateway, HostAddr, HostConfig, HostConfigError, HttpConfig, Mac, PortRef};
pub use device::{FrameIo, PortIo, QueueIo};
pub use http::{metrics_status, Handler, Request, Response};
pub use sockets::{
    SocketError, TcpListener, TcpOptions, TcpState, TcpStream, UdpOptions, UdpSocket,
};
pub use stack::{IoPort, Stack};
pub use stats::{HostPortSnapshot, HostPortStats, HostStackStats, HttpSnapshot};

use crate::HostPorts;

/// Why the host stack cannot start.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The configuration names something that is not there, or is malformed.
    #[error(transparent)]
    Config(#[from] HostConfigError),
    /// The transmit pool cannot be made.
    #[error("host stack pool: {0}")]
    Pool(#[from] sluice_drivers::pool::PoolError),
    /// The host thread cannot be started.
    #[error("starting the host-stack thread: {0}")]
    Spawn(std::io::Error),
}

/// What the host thread and the socket handles share.
pub(crate) struct Shared {
    stack: Mutex<Stack>,
    stop: AtomicBool,
    thread: OnceLock<std::thread::Thread>,
    /// The dataplane's ports, to notice it stopping (none for a stack over
    /// other queues).
    ports: Option<HostPorts>,
}

impl Shared {
    /// The stack, unless the host stack has stopped.
    pub(crate) fn lock(&self) -> Result<MutexGuard<'_, Stack>, SocketError> {
        if self.stopped() {
            return Err(SocketError::Stopped);
        }
        Ok(self.lock_any())
    }

    /// The stack, even after a stop (to release sockets).
    pub(crate) fn lock_any(&self) -> MutexGuard<'_, Stack> {
        // A panic while holding the lock leaves smoltcp's state as it was
        // between two calls; carrying on is safer than poisoning every
        // socket.
        self.stack.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.ports.as_ref().is_some_and(HostPorts::stopping)
    }

    /// Gets the host thread polling soon (something to send).
    pub(crate) fn wake(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }
}

/// The host stack running on its own thread (`sluice-host`). Dropping it
/// stops the thread.
pub struct HostStack {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for HostStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostStack").finish_non_exhaustive()
    }
}

impl HostStack {
    /// Starts a host stack on a dataplane's ports, owning what `config`
    /// gives it and serving HTTP with `http` when `config.http` is set.
    ///
    /// # Errors
    /// [`HostError`] naming the bad configuration item; nothing is left
    /// running.
    pub fn start(
        ports: HostPorts,
        config: HostConfig,
        http: Option<Box<dyn Handler>>,
    ) -> Result<HostStack, HostError> {
        let io = (0..ports.len())
            .map(|p| {
                let info = ports.info(p);
                IoPort {
                    name: info.map(|i| i.name.clone()).unwrap_or_default(),
                    ifindex: info.map_or(0, |i| i.ifindex),
                    io: Box::new(PortIo::new(ports.clone(), p)),
                }
            })
            .collect();
        HostStack::spawn(io, &config, http, Some(ports))
    }

    /// Starts a host stack over any frame queues (an endpoint of a test
    /// port, a TAP device an embedder drives, ...).
    ///
    /// # Errors
    /// As [`HostStack::start`].
    pub fn start_with_io(
        ports: Vec<IoPort>,
        config: HostConfig,
        http: Option<Box<dyn Handler>>,
    ) -> Result<HostStack, HostError> {
        HostStack::spawn(ports, &config, http, None)
    }

    fn spawn(
        ports: Vec<IoPort>,
        config: &HostConfig,
        http: Option<Box<dyn Handler>>,
        dp: Option<HostPorts>,
    ) -> Result<HostStack, HostError> {
        let stack = Stack::new(config, ports, http)?;
        let shared = Arc::new(Shared {
            stack: Mutex::new(stack),
            stop: AtomicBool::new(false),
            thread: OnceLock::new(),
            ports: dp,
        });
        let s = shared.clone();
        let max_sleep = config.max_sleep.max(Duration::from_micros(10));
        let thread = std::thread::Builder::new()
            .name("sluice-host".into())
            .spawn(move || run(&s, max_sleep))
            .map_err(HostError::Spawn)?;
        let _ = shared.thread.set(thread.thread().clone());
        Ok(HostStack {
            shared,
            thread: Some(thread),
        })
    }

    /// Counters and addresses, per port.
    pub fn stats(&self) -> HostStackStats {
        self.shared.lock_any().stats()
    }

    /// The MAC address the stack uses on `port` (none when it has no
    /// interface there).
    pub fn mac(&self, port: usize) -> Option<Mac> {
        self.shared.lock_any().mac(port)
    }

    /// A UDP socket bound to `local` (an address of the stack, or the
    /// unspecified address for every interface).
    ///
    /// # Errors
    /// [`SocketError::AddrNotAvailable`], [`SocketError::AddrInUse`].
    pub fn udp_bind(&self, local: SocketAddr) -> Result<UdpSocket, SocketError> {
        sockets::udp_bind(&self.shared, local, UdpOptions::default())
    }

    /// [`HostStack::udp_bind`] with buffer sizes.
    ///
    /// # Errors
    /// As [`HostStack::udp_bind`].
    pub fn udp_bind_with(
        &self,
        local: SocketAddr,
        opts: UdpOptions,
    ) -> Result<UdpSocket, SocketError> {
        sockets::udp_bind(&self.shared, local, opts)
    }

    /// Listens for TCP connections on `local`.
    ///
    /// # Errors
    /// [`SocketError::AddrNotAvailable`], [`SocketError::AddrInUse`].
    pub fn tcp_listen(&self, local: SocketAddr) -> Result<TcpListener, SocketError> {
        sockets::tcp_listen(&self.shared, local, TcpOptions::default())
    }

    /// [`HostStack::tcp_listen`] with options for the accepted connections.
    ///
    /// # Errors
    /// As [`HostStack::tcp_listen`].
    pub fn tcp_listen_with(
        &self,
        local: SocketAddr,
        opts: TcpOptions,
    ) -> Result<TcpListener, SocketError> {
        sockets::tcp_listen(&self.shared, local, opts)
    }

    /// Opens a TCP connection to `remote` (non-blocking: the stream says
    /// [`TcpState::SynSent`] until the handshake completes).
    ///
    /// # Errors
    /// [`SocketError::Unreachable`] when no interface reaches `remote`,
    /// [`SocketError::NoPorts`].
    pub fn tcp_connect(&self, remote: SocketAddr) -> Result<TcpStream, SocketError> {
        sockets::tcp_connect(&self.shared, remote, TcpOptions::default())
    }

    /// [`HostStack::tcp_connect`] with options.
    ///
    /// # Errors
    /// As [`HostStack::tcp_connect`].
    pub fn tcp_connect_with(
        &self,
        remote: SocketAddr,
        opts: TcpOptions,
    ) -> Result<TcpStream, SocketError> {
        sockets::tcp_connect(&self.shared, remote, opts)
    }

    /// Stops the thread and returns the final counters.
    pub fn stop(mut self) -> HostStackStats {
        self.shutdown();
        self.shared.lock_any().stats()
    }

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for HostStack {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Idle loops spent yielding before the host thread starts to sleep.
const YIELD_ROUNDS: u32 = 64;

/// The host thread.
fn run(shared: &Shared, max_sleep: Duration) {
    // The HTTP service lives outside the lock: its handler runs unlocked.
    let mut http = shared.lock_any().http.take();
    let mut idle = 0u32;
    while !shared.stopped() {
        let (mut work, stats, now, delay) = {
            let mut st = shared.lock_any();
            let now = st.now();
            let mut work = st.poll_io(now);
            if let Some(h) = &mut http {
                work |= h.exchange(&mut st, now);
            }
            let stats = http.as_ref().filter(|h| h.has_work()).map(|_| st.stats());
            let delay = if work { None } else { st.poll_delay() };
            (work, stats, now, delay)
        };
        if let (Some(h), Some(stats)) = (&mut http, stats) {
            if h.serve(&stats, now) {
                work = true;
                let mut st = shared.lock_any();
                h.exchange(&mut st, now);
                st.poll_io(now);
            }
        }
        if work {
            idle = 0;
            continue;
        }
        idle = idle.saturating_add(1);
        if idle < YIELD_ROUNDS {
            std::thread::yield_now();
        } else {
            let d = delay.map_or(max_sleep, |d| d.min(max_sleep));
            std::thread::park_timeout(d);
        }
    }
    // The handler (and whatever it holds, such as the dataplane) is
    // released with the thread.
    drop(http);
}
