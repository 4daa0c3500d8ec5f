//! TCP and UDP sockets on the host stack, for an NFV program that embeds
//! the dataplane: its own control channel, a BGP or BFD session, a DNS
//! responder, on the addresses the appliance owns.
//!
//! # Model
//!
//! The host thread owns every smoltcp interface and socket, inside one
//! mutex with the rest of the stack's state. A socket handle here
//! ([`UdpSocket`], [`TcpListener`], [`TcpStream`]) is a ticket: each call
//! takes the mutex, moves bytes between the caller and the smoltcp socket's
//! buffers, releases it, and wakes the host thread when there is something
//! to send. The mutex is held only by the host thread (for one bounded
//! poll) and by these calls (for one copy); workers never touch it, so
//! nothing here can slow the per-packet path.
//!
//! Every call is non-blocking: [`SocketError::WouldBlock`] means try again
//! later (after the host thread's next poll, typically well under a
//! millisecond). Dropping a [`TcpStream`] closes it gracefully: the host
//! stack keeps the connection until its queued data is sent and the close
//! is done (or a linger time passes), like a kernel does after `close(2)`.
//!
//! # Addresses
//!
//! A socket bound to one of the stack's addresses lives on that address's
//! interface; bound to the unspecified address (`0.0.0.0` or `::`) it
//! listens on every interface. Outgoing traffic goes out of the interface
//! whose network contains the destination, else one with a default route.
//!
//! ```no_run
//! # fn demo(host: &sluice_dataplane::host::HostStack) -> Result<(), Box<dyn std::error::Error>> {
//! use sluice_dataplane::host::SocketError;
//! let udp = host.udp_bind("0.0.0.0:5353".parse()?)?;
//! let mut buf = [0u8; 1500];
//! match udp.recv_from(&mut buf) {
//!     Ok((n, from)) => udp.send_to(&buf[..n], from)?,
//!     Err(SocketError::WouldBlock) => {}
//!     Err(e) => return Err(e.into()),
//! }
//! # Ok(()) }
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::{tcp, udp};
use smoltcp::wire::{IpEndpoint, IpListenEndpoint};

use super::stack::{ListenerState, Orphan, Proto, Stack};
use super::Shared;

/// Why a socket call did not do what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SocketError {
    /// Nothing to receive or no room to send now; try again later.
    #[error("operation would block")]
    WouldBlock,
    /// The address is not one of the host stack's.
    #[error("address not available: it is not one of the host stack's")]
    AddrNotAvailable,
    /// Another socket is bound to this port.
    #[error("address in use")]
    AddrInUse,
    /// No interface reaches the destination.
    #[error("no route to the destination")]
    Unreachable,
    /// The connection is not (or no longer) established.
    #[error("not connected")]
    NotConnected,
    /// A datagram larger than the socket's buffer.
    #[error("datagram larger than the socket buffer")]
    TooLarge,
    /// The caller's buffer is smaller than the next datagram (which stays
    /// queued); the value is its size.
    #[error("buffer too small for the next datagram of {0} bytes")]
    BufferTooSmall(usize),
    /// Every ephemeral port is taken.
    #[error("no ephemeral port left")]
    NoPorts,
    /// The host stack has stopped.
    #[error("the host stack has stopped")]
    Stopped,
}

/// Buffer sizes and options of a TCP socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpOptions {
    /// Receive buffer (bytes; also the largest advertised window).
    pub rx_buffer: usize,
    /// Send buffer (bytes).
    pub tx_buffer: usize,
    /// Disable Nagle's algorithm (send small segments at once).
    pub nodelay: bool,
    /// Keep-alive probe interval, if any.
    pub keep_alive: Option<Duration>,
    /// Abort when the peer is silent this long with data outstanding.
    pub timeout: Option<Duration>,
    /// Listening sockets per interface: connections that can be waiting
    /// for [`TcpListener::accept`] at once.
    pub backlog: usize,
    /// How long a dropped stream may take to finish sending and closing
    /// before it is reset.
    pub linger: Duration,
}

impl Default for TcpOptions {
    fn default() -> Self {
        TcpOptions {
            rx_buffer: 64 * 1024,
            tx_buffer: 64 * 1024,
            nodelay: false,
            keep_alive: None,
            timeout: Some(Duration::from_secs(60)),
            backlog: 4,
            linger: Duration::from_secs(30),
        }
    }
}

/// Buffer sizes of a UDP socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpOptions {
    /// Datagrams the receive buffer holds.
    pub rx_datagrams: usize,
    /// Bytes the receive buffer holds.
    pub rx_bytes: usize,
    /// Datagrams the send buffer holds.
    pub tx_datagrams: usize,
    /// Bytes the send buffer holds.
    pub tx_bytes: usize,
}

impl Default for UdpOptions {
    fn default() -> Self {
        UdpOptions {
            rx_datagrams: 64,
            rx_bytes: 64 * 1024,
            tx_datagrams: 64,
            tx_bytes: 64 * 1024,
        }
    }
}

/// A TCP connection's state (RFC 9293's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpState {
    /// No connection.
    Closed,
    /// Waiting for a connection.
    Listen,
    /// SYN sent, waiting for the answer.
    SynSent,
    /// SYN received, waiting for the final ACK.
    SynReceived,
    /// Open both ways.
    Established,
    /// We closed; our FIN is not acknowledged yet.
    FinWait1,
    /// We closed; waiting for the peer's FIN.
    FinWait2,
    /// The peer closed; we may still send.
    CloseWait,
    /// Both closed at once.
    Closing,
    /// The peer closed, then we did; waiting for the last ACK.
    LastAck,
    /// Done; waiting out stray segments.
    TimeWait,
}

impl From<tcp::State> for TcpState {
    fn from(s: tcp::State) -> TcpState {
        match s {
            tcp::State::Closed => TcpState::Closed,
            tcp::State::Listen => TcpState::Listen,
            tcp::State::SynSent => TcpState::SynSent,
            tcp::State::SynReceived => TcpState::SynReceived,
            tcp::State::Established => TcpState::Established,
            tcp::State::FinWait1 => TcpState::FinWait1,
            tcp::State::FinWait2 => TcpState::FinWait2,
            tcp::State::CloseWait => TcpState::CloseWait,
            tcp::State::Closing => TcpState::Closing,
            tcp::State::LastAck => TcpState::LastAck,
            tcp::State::TimeWait => TcpState::TimeWait,
        }
    }
}

fn smol(d: Duration) -> smoltcp::time::Duration {
    smoltcp::time::Duration::from_micros(d.as_micros().min(u128::from(u64::MAX)) as u64)
}

fn new_tcp(o: &TcpOptions) -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; o.rx_buffer.max(1024)]),
        tcp::SocketBuffer::new(vec![0; o.tx_buffer.max(1024)]),
    );
    s.set_nagle_enabled(!o.nodelay);
    s.set_keep_alive(o.keep_alive.map(smol));
    s.set_timeout(o.timeout.map(smol));
    s
}

fn listen_endpoint(ip: Option<IpAddr>, port: u16) -> IpListenEndpoint {
    IpListenEndpoint {
        addr: ip.map(Into::into),
        port,
    }
}

fn socket_addr(e: IpEndpoint) -> SocketAddr {
    SocketAddr::new(IpAddr::from(e.addr), e.port)
}

impl Stack {
    /// The interfaces a socket bound to `ip` lives on.
    fn bind_ifaces(&self, ip: IpAddr) -> Result<Vec<usize>, SocketError> {
        if ip.is_unspecified() {
            if self.ifaces.is_empty() {
                return Err(SocketError::AddrNotAvailable);
            }
            return Ok((0..self.ifaces.len()).collect());
        }
        self.owner(ip)
            .map(|i| vec![i])
            .ok_or(SocketError::AddrNotAvailable)
    }

    fn claim(&mut self, ifaces: &[usize], proto: Proto, port: u16) -> Result<(), SocketError> {
        if ifaces
            .iter()
            .any(|&i| self.bound.contains(&(i, proto, port)))
        {
            return Err(SocketError::AddrInUse);
        }
        for &i in ifaces {
            self.bound.insert((i, proto, port));
        }
        Ok(())
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn ephemeral(&mut self, iface: usize) -> Result<u16, SocketError> {
        for _ in 0..16384 {
            let p = self.next_ephemeral;
            self.next_ephemeral = if p == u16::MAX { 49152 } else { p + 1 };
            if self.bound.insert((iface, Proto::Tcp, p)) {
                return Ok(p);
            }
        }
        Err(SocketError::NoPorts)
    }

    fn add_listening(&mut self, iface: usize, l: &ListenerState) -> SocketHandle {
        let mut s = new_tcp(&l.opts);
        // Cannot fail: the port is non-zero and the socket is new.
        let _ = s.listen(listen_endpoint(l.local, l.port));
        self.ifaces[iface].sockets.add(s)
    }

    fn tcp(&mut self, iface: usize, h: SocketHandle) -> &mut tcp::Socket<'static> {
        self.ifaces[iface]
            .sockets
            .get_mut::<tcp::Socket<'static>>(h)
    }
}

/// A UDP socket on the host stack.
pub struct UdpSocket {
    pub(crate) shared: Arc<Shared>,
    pub(crate) id: u64,
    pub(crate) local: SocketAddr,
}

impl std::fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpSocket")
            .field("local", &self.local)
            .finish()
    }
}

pub(crate) fn udp_bind(
    shared: &Arc<Shared>,
    local: SocketAddr,
    o: UdpOptions,
) -> Result<UdpSocket, SocketError> {
    if local.port() == 0 {
        return Err(SocketError::AddrNotAvailable);
    }
    let mut st = shared.lock()?;
    let ifaces = st.bind_ifaces(local.ip())?;
    st.claim(&ifaces, Proto::Udp, local.port())?;
    let ip = (!local.ip().is_unspecified()).then_some(local.ip());
    let mut handles = Vec::new();
    for i in ifaces {
        let mut s = udp::Socket::new(
            udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; o.rx_datagrams.max(1)],
                vec![0; o.rx_bytes.max(1500)],
            ),
            udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; o.tx_datagrams.max(1)],
                vec![0; o.tx_bytes.max(1500)],
            ),
        );
        // Cannot fail: the port is non-zero and the socket is new.
        let _ = s.bind(listen_endpoint(ip, local.port()));
        handles.push((i, st.ifaces[i].sockets.add(s)));
    }
    let id = st.id();
    st.udp.insert(id, (local.port(), handles));
    Ok(UdpSocket {
        shared: shared.clone(),
        id,
        local,
    })
}

impl UdpSocket {
    /// The address it is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Queues a datagram for `dst`.
    ///
    /// # Errors
    /// [`SocketError::WouldBlock`] when the send buffer is full,
    /// [`SocketError::Unreachable`] when no interface of this socket reaches
    /// `dst`, [`SocketError::TooLarge`] for a datagram larger than the send
    /// buffer.
    pub fn send_to(&self, data: &[u8], dst: SocketAddr) -> Result<(), SocketError> {
        let mut st = self.shared.lock()?;
        let handles = st
            .udp
            .get(&self.id)
            .map(|(_, h)| h.clone())
            .unwrap_or_default();
        let target = match handles.as_slice() {
            [one] => Some(*one),
            many => st
                .route(dst.ip())
                .and_then(|i| many.iter().find(|(j, _)| *j == i).copied()),
        };
        let (i, h) = target.ok_or(SocketError::Unreachable)?;
        let s = st.ifaces[i].sockets.get_mut::<udp::Socket<'static>>(h);
        if data.len() > s.payload_send_capacity() {
            return Err(SocketError::TooLarge);
        }
        let r = match s.send_slice(data, IpEndpoint::from(dst)) {
            Ok(()) => Ok(()),
            Err(udp::SendError::BufferFull) => Err(SocketError::WouldBlock),
            Err(udp::SendError::Unaddressable) => Err(SocketError::Unreachable),
        };
        drop(st);
        self.shared.wake();
        r
    }

    /// Takes the next datagram: its length and sender.
    ///
    /// # Errors
    /// [`SocketError::WouldBlock`] when none is queued;
    /// [`SocketError::BufferTooSmall`] when `buf` cannot hold it (it stays
    /// queued).
    pub fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddr), SocketError> {
        let mut st = self.shared.lock()?;
        let handles = st
            .udp
            .get(&self.id)
            .map(|(_, h)| h.clone())
            .unwrap_or_default();
        for (i, h) in handles {
            let s = st.ifaces[i].sockets.get_mut::<udp::Socket<'static>>(h);
            let Ok((payload, meta)) = s.peek() else {
                continue;
            };
            if payload.len() > buf.len() {
                return Err(SocketError::BufferTooSmall(payload.len()));
            }
            let from = socket_addr(meta.endpoint);
            if let Ok((n, _)) = s.recv_slice(buf) {
                return Ok((n, from));
            }
        }
        Err(SocketError::WouldBlock)
    }
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        let mut st = self.shared.lock_any();
        if let Some((port, handles)) = st.udp.remove(&self.id) {
            for (i, h) in handles {
                st.ifaces[i].sockets.remove(h);
                st.bound.remove(&(i, Proto::Udp, port));
            }
        }
    }
}

/// A listening TCP socket on the host stack.
///
/// smoltcp sockets have no accept queue: a listening socket becomes the
/// connection. The listener keeps [`TcpOptions::backlog`] listening
/// sockets per interface and replaces each one [`TcpListener::accept`]
/// hands out.
pub struct TcpListener {
    pub(crate) shared: Arc<Shared>,
    pub(crate) id: u64,
    pub(crate) local: SocketAddr,
}

impl std::fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpListener")
            .field("local", &self.local)
            .finish()
    }
}

pub(crate) fn tcp_listen(
    shared: &Arc<Shared>,
    local: SocketAddr,
    opts: TcpOptions,
) -> Result<TcpListener, SocketError> {
    if local.port() == 0 {
        return Err(SocketError::AddrNotAvailable);
    }
    let mut st = shared.lock()?;
    let ifaces = st.bind_ifaces(local.ip())?;
    st.claim(&ifaces, Proto::Tcp, local.port())?;
    let mut l = ListenerState {
        port: local.port(),
        local: (!local.ip().is_unspecified()).then_some(local.ip()),
        slots: Vec::new(),
        opts,
    };
    for &i in &ifaces {
        for _ in 0..opts.backlog.max(1) {
            let h = st.add_listening(i, &l);
            l.slots.push((i, h));
        }
    }
    let id = st.id();
    st.listeners.insert(id, l);
    drop(st);
    shared.wake();
    Ok(TcpListener {
        shared: shared.clone(),
        id,
        local,
    })
}

impl TcpListener {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// A connection that completed its handshake, and its peer.
    ///
    /// # Errors
    /// [`SocketError::WouldBlock`] when none is waiting.
    pub fn accept(&self) -> Result<(TcpStream, SocketAddr), SocketError> {
        let mut st = self.shared.lock()?;
        let Some(l) = st.listeners.remove(&self.id) else {
            return Err(SocketError::Stopped);
        };
        let mut l = l;
        let mut found = None;
        for (k, &(i, h)) in l.slots.iter().enumerate() {
            let s = st.tcp(i, h);
            if s.is_active() && s.state() != tcp::State::SynReceived {
                if let Some(peer) = s.remote_endpoint() {
                    found = Some((k, i, h, socket_addr(peer)));
                    break;
                }
            }
        }
        let r = match found {
            Some((k, i, h, peer)) => {
                let fresh = st.add_listening(i, &l);
                l.slots[k] = (i, fresh);
                Ok((
                    TcpStream {
                        shared: self.shared.clone(),
                        iface: i,
                        handle: h,
                        port: None,
                        linger: l.opts.linger,
                    },
                    peer,
                ))
            }
            None => Err(SocketError::WouldBlock),
        };
        st.listeners.insert(self.id, l);
        r
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        let mut st = self.shared.lock_any();
        if let Some(l) = st.listeners.remove(&self.id) {
            for (i, h) in l.slots {
                // Listening or half-open: reset whatever is there.
                st.tcp(i, h).abort();
                let now = st.now();
                st.orphans.push(Orphan {
                    iface: i,
                    handle: h,
                    deadline: now,
                    port: None,
                });
            }
            let ifaces: Vec<usize> = (0..st.ifaces.len()).collect();
            for i in ifaces {
                st.bound.remove(&(i, Proto::Tcp, l.port));
            }
        }
        drop(st);
        self.shared.wake();
    }
}

/// A TCP connection on the host stack.
pub struct TcpStream {
    pub(crate) shared: Arc<Shared>,
    pub(crate) iface: usize,
    pub(crate) handle: SocketHandle,
    /// The ephemeral port it holds (outgoing connections).
    pub(crate) port: Option<u16>,
    pub(crate) linger: Duration,
}

impl std::fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpStream")
            .field("iface", &self.iface)
            .finish()
    }
}

pub(crate) fn tcp_connect(
    shared: &Arc<Shared>,
    remote: SocketAddr,
    opts: TcpOptions,
) -> Result<TcpStream, SocketError> {
    if remote.port() == 0 || remote.ip().is_unspecified() {
        return Err(SocketError::Unreachable);
    }
    let mut st = shared.lock()?;
    let i = st.route(remote.ip()).ok_or(SocketError::Unreachable)?;
    let port = st.ephemeral(i)?;
    let mut s = new_tcp(&opts);
    let cx = st.ifaces[i].iface.context();
    if s.connect(cx, IpEndpoint::from(remote), port).is_err() {
        st.bound.remove(&(i, Proto::Tcp, port));
        return Err(SocketError::Unreachable);
    }
    let handle = st.ifaces[i].sockets.add(s);
    drop(st);
    shared.wake();
    Ok(TcpStream {
        shared: shared.clone(),
        iface: i,
        handle,
        port: Some(port),
        linger: opts.linger,
    })
}

impl TcpStream {
    fn with<R>(&self, f: impl FnOnce(&mut tcp::Socket<'static>) -> R) -> Result<R, SocketError> {
        let mut st = self.shared.lock()?;
        let r = f(st.tcp(self.iface, self.handle));
        drop(st);
        self.shared.wake();
        Ok(r)
    }

    /// Queues bytes to send; returns how many fit.
    ///
    /// # Errors
    /// [`SocketError::WouldBlock`] while connecting or when the send buffer
    /// is full; [`SocketError::NotConnected`] once sending is no longer
    /// possible (closed, reset).
    pub fn send(&self, data: &[u8]) -> Result<usize, SocketError> {
        self.with(|s| {
            if !s.may_send() {
                return match s.state() {
                    tcp::State::SynSent | tcp::State::SynReceived => Err(SocketError::WouldBlock),
                    _ => Err(SocketError::NotConnected),
                };
            }
            match s.send_slice(data) {
                Ok(0) if !data.is_empty() => Err(SocketError::WouldBlock),
                Ok(n) => Ok(n),
                Err(_) => Err(SocketError::NotConnected),
            }
        })?
    }

    /// Takes received bytes; `Ok(0)` means the peer closed its side (or
    /// the connection is gone) and everything was read.
    ///
    /// # Errors
    /// [`SocketError::WouldBlock`] when nothing has arrived yet.
    pub fn recv(&self, buf: &mut [u8]) -> Result<usize, SocketError> {
        self.with(|s| match s.recv_slice(buf) {
            Ok(0) if !buf.is_empty() => {
                if s.may_recv()
                    || matches!(s.state(), tcp::State::SynSent | tcp::State::SynReceived)
                {
                    Err(SocketError::WouldBlock)
                } else {
                    Ok(0)
                }
            }
            Ok(n) => Ok(n),
            Err(tcp::RecvError::Finished) => Ok(0),
            Err(tcp::RecvError::InvalidState) => match s.state() {
                tcp::State::SynSent | tcp::State::SynReceived => Err(SocketError::WouldBlock),
                _ => Ok(0),
            },
        })?
    }

    /// Closes the sending side (FIN after the queued bytes); receiving
    /// goes on until the peer closes.
    pub fn close(&self) {
        let _ = self.with(|s| s.close());
    }

    /// Resets the connection at once (RST), dropping queued bytes.
    pub fn abort(&self) {
        let _ = self.with(|s| s.abort());
    }

    /// The connection's state.
    pub fn state(&self) -> TcpState {
        self.with(|s| s.state().into()).unwrap_or(TcpState::Closed)
    }

    /// Whether the handshake is done and the connection not yet closed.
    pub fn is_connected(&self) -> bool {
        matches!(
            self.state(),
            TcpState::Established | TcpState::CloseWait | TcpState::FinWait1 | TcpState::FinWait2
        )
    }

    /// Bytes queued and not yet acknowledged by the peer.
    pub fn send_queue(&self) -> usize {
        self.with(|s| s.send_queue()).unwrap_or(0)
    }

    /// The local address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.with(|s| s.local_endpoint().map(socket_addr))
            .ok()
            .flatten()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.with(|s| s.remote_endpoint().map(socket_addr))
            .ok()
            .flatten()
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        let mut st = self.shared.lock_any();
        st.tcp(self.iface, self.handle).close();
        let deadline = st.now() + smol(self.linger);
        st.orphans.push(Orphan {
            iface: self.iface,
            handle: self.handle,
            deadline,
            port: self.port,
        });
        drop(st);
        self.shared.wake();
    }
}

/// The unspecified IPv4 address with a port, for binding on every
/// interface: `any(9000)` is `0.0.0.0:9000`.
pub fn any(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)
}
