//! The null port, like DPDK's `net_null`: RX makes packets as fast as it is
//! polled, TX frees whatever it is given. For benchmarks (the cost of the
//! dataplane without any I/O) and for tests that need a traffic source.
//!
//! RX fills every free slot of the burst with a packet of the configured
//! size, copied from a template into a buffer of the port's own
//! [`HeapPool`] (the copy is what DPDK's `net_null,copy=1` does; it makes
//! each packet a fresh, writable buffer, so a program that rewrites
//! packets sees the same bytes every time). The default template is a
//! well-formed Ethernet/IPv4/UDP frame with correct checksums (see
//! [`udp_template`]), so MAC-swap and parsing programs do real work. With a
//! [`NullConfig::limit`] the port makes exactly that many packets in total,
//! over all its queues, and then nothing.
//!
//! Counting: RX counts packets and bytes made; an empty pool counts one
//! [`DropReason::NoBuffer`] per burst that hit it (the burst is cut short;
//! unused packets of a limit are not spent). TX counts packets and bytes
//! freed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::common::{next_ifindex, Claim, Claims};
use crate::{
    Burst, DropReason, FramePool, HeapPool, Port, PortError, PortInfo, QueueStats, RxQueue,
    TxQueue, HEADROOM,
};

/// Default packet size: a minimum Ethernet frame without its FCS.
pub const DEFAULT_SIZE: usize = 64;
/// Largest packet a null port makes (a pool buffer is at most 64 KiB,
/// headroom included).
pub const MAX_SIZE: usize = 65536 - HEADROOM;

/// How a [`NullPort`] behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NullConfig {
    /// Bytes per packet (1..=[`MAX_SIZE`]).
    pub size: usize,
    /// RX queues, and as many TX queues (at least 1).
    pub queues: u16,
    /// The packet bytes: the first `size` bytes are used, and a shorter
    /// template is padded with zeros. `None` means [`udp_template`].
    pub template: Option<Vec<u8>>,
    /// Packets to make in total, over all queues; `None` for no end.
    pub limit: Option<u64>,
}

impl Default for NullConfig {
    fn default() -> Self {
        NullConfig {
            size: DEFAULT_SIZE,
            queues: 1,
            template: None,
            limit: None,
        }
    }
}

/// Source MAC of the default template (locally administered).
pub const TEMPLATE_SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// Destination MAC of the default template.
pub const TEMPLATE_DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// Source address of the default template (RFC 2544's benchmarking range).
pub const TEMPLATE_SRC_IP: [u8; 4] = [198, 18, 0, 1];
/// Destination address of the default template.
pub const TEMPLATE_DST_IP: [u8; 4] = [198, 18, 0, 2];
/// UDP source port of the default template.
pub const TEMPLATE_SRC_PORT: u16 = 1024;
/// UDP destination port of the default template (discard).
pub const TEMPLATE_DST_PORT: u16 = 9;

/// An Ethernet/IPv4/UDP frame of `size` bytes between the `TEMPLATE_*`
/// addresses and ports, with a payload of counting bytes and correct IPv4
/// and UDP checksums.
///
/// Headers take 42 bytes. A smaller `size` gives the first `size` bytes of
/// the 42-byte frame: a runt whose length fields claim more than is there,
/// which is exactly what a parser test wants.
pub fn udp_template(size: usize) -> Vec<u8> {
    let full = size.max(42);
    let mut p = vec![0u8; full];
    p[0..6].copy_from_slice(&TEMPLATE_DST_MAC);
    p[6..12].copy_from_slice(&TEMPLATE_SRC_MAC);
    p[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    // IPv4: version 4, 20-byte header, DF, TTL 64, UDP.
    let ip_len = (full - 14).min(0xffff) as u16;
    p[14] = 0x45;
    p[16..18].copy_from_slice(&ip_len.to_be_bytes());
    p[20..22].copy_from_slice(&0x4000u16.to_be_bytes());
    p[22] = 64;
    p[23] = 17;
    p[26..30].copy_from_slice(&TEMPLATE_SRC_IP);
    p[30..34].copy_from_slice(&TEMPLATE_DST_IP);
    let csum = checksum(&[&p[14..34]]);
    p[24..26].copy_from_slice(&csum.to_be_bytes());
    // UDP.
    let udp_len = (full - 34).min(0xffff) as u16;
    p[34..36].copy_from_slice(&TEMPLATE_SRC_PORT.to_be_bytes());
    p[36..38].copy_from_slice(&TEMPLATE_DST_PORT.to_be_bytes());
    p[38..40].copy_from_slice(&udp_len.to_be_bytes());
    for (i, b) in p[42..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&TEMPLATE_SRC_IP);
    pseudo[4..8].copy_from_slice(&TEMPLATE_DST_IP);
    pseudo[9] = 17;
    pseudo[10..12].copy_from_slice(&udp_len.to_be_bytes());
    let end = (34 + usize::from(udp_len)).min(full);
    let csum = match checksum(&[&pseudo, &p[34..end]]) {
        0 => 0xffff, // 0 means "no checksum" in UDP over IPv4
        c => c,
    };
    p[40..42].copy_from_slice(&csum.to_be_bytes());
    p.truncate(size);
    p
}

/// The Internet checksum (RFC 1071) of the concatenated parts, each part
/// but the last of even length.
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum = 0u64;
    for part in parts {
        let mut words = part.chunks_exact(2);
        for w in &mut words {
            sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
        }
        if let [last] = words.remainder() {
            sum += u64::from(*last) << 8;
        }
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// What the queues of one port share.
struct Shared {
    /// Exactly `size` bytes.
    template: Box<[u8]>,
    /// Packets still to make, when there is a limit.
    remaining: Option<AtomicU64>,
}

/// A port that makes packets on RX and discards them on TX (see the module
/// docs).
pub struct NullPort {
    info: PortInfo,
    pool: &'static HeapPool,
    shared: Arc<Shared>,
    rx_claims: Arc<Claims>,
    tx_claims: Arc<Claims>,
}

impl std::fmt::Debug for NullPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NullPort")
            .field("info", &self.info)
            .field("size", &self.shared.template.len())
            .field("remaining", &self.remaining())
            .finish()
    }
}

impl NullPort {
    /// Makes a null port and its pool: enough buffers of at least
    /// `2048 + HEADROOM` bytes (more if `size` needs it) for 2048 packets
    /// in flight per queue, 4096 at least.
    ///
    /// # Errors
    /// [`PortError::Config`] for a size or queue count out of range, or a
    /// pool that cannot be made.
    pub fn new(name: &str, config: NullConfig) -> Result<Arc<NullPort>, PortError> {
        let bad = |reason: String| PortError::Config {
            port: name.to_string(),
            reason,
        };
        if !(1..=MAX_SIZE).contains(&config.size) {
            return Err(bad(format!(
                "packet size {} out of range (1..={MAX_SIZE})",
                config.size
            )));
        }
        if config.queues == 0 {
            return Err(bad("a null port needs at least one queue".into()));
        }
        let mut template = config.template.unwrap_or_else(|| udp_template(config.size));
        template.resize(config.size, 0);
        let frame_size = (HEADROOM + config.size).max(2048 + HEADROOM);
        let count = (2048 * usize::from(config.queues)).clamp(4096, 1 << 20);
        let pool = HeapPool::new(&format!("{name}.pool"), count, frame_size)
            .map_err(|e| bad(e.to_string()))?;
        Ok(Arc::new(NullPort {
            info: PortInfo {
                name: name.to_string(),
                driver: "null",
                ifindex: next_ifindex(),
                rx_queues: config.queues,
                tx_queues: config.queues,
                mode: "memory".to_string(),
            },
            pool,
            shared: Arc::new(Shared {
                template: template.into_boxed_slice(),
                remaining: config.limit.map(AtomicU64::new),
            }),
            rx_claims: Claims::new(name, config.queues),
            tx_claims: Claims::new(name, config.queues),
        }))
    }

    /// The pool RX allocates from.
    pub fn pool(&self) -> &'static HeapPool {
        self.pool
    }

    /// The bytes of every packet.
    pub fn template(&self) -> &[u8] {
        &self.shared.template
    }

    /// Packets still to make, when there is a limit.
    pub fn remaining(&self) -> Option<u64> {
        self.shared
            .remaining
            .as_ref()
            .map(|r| r.load(Ordering::Relaxed))
    }

    /// Whether a limited port has made all its packets.
    pub fn is_exhausted(&self) -> bool {
        self.remaining() == Some(0)
    }
}

impl Port for NullPort {
    fn info(&self) -> &PortInfo {
        &self.info
    }

    fn is_exhausted(&self) -> Option<bool> {
        self.remaining().map(|r| r == 0)
    }

    fn open_rx(&self, q: u16) -> Result<Box<dyn RxQueue>, PortError> {
        Ok(Box::new(NullRx {
            claim: self.rx_claims.claim(q)?,
            pool: self.pool,
            shared: Arc::clone(&self.shared),
            stats: QueueStats::default(),
        }))
    }

    fn open_tx(&self, q: u16) -> Result<Box<dyn TxQueue>, PortError> {
        Ok(Box::new(NullTx {
            _claim: self.tx_claims.claim(q)?,
            stats: QueueStats::default(),
        }))
    }
}

struct NullRx {
    claim: Claim,
    pool: &'static HeapPool,
    shared: Arc<Shared>,
    stats: QueueStats,
}

impl RxQueue for NullRx {
    fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        let mut want = burst.room() as u64;
        if want == 0 {
            return 0;
        }
        // One atomic per burst, not per packet, for the shared limit.
        let remaining = self.shared.remaining.as_ref();
        if let Some(rem) = remaining {
            let before = rem
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
                    Some(r - r.min(want))
                })
                .unwrap_or(0);
            want = want.min(before);
        }
        let template = &self.shared.template;
        let q = self.claim.queue();
        let mut made = 0u64;
        while made < want {
            let Some(mut f) = self.pool.alloc() else {
                self.stats.drop_n(DropReason::NoBuffer, 1);
                break;
            };
            // Cannot fail: the pool's buffers hold HEADROOM + size.
            f.fill(template);
            f.rx_queue = q;
            // Cannot fail: `want` is at most the burst's room.
            let _ = burst.push(f);
            made += 1;
        }
        if made < want {
            if let Some(rem) = remaining {
                rem.fetch_add(want - made, Ordering::Relaxed);
            }
        }
        if made > 0 {
            self.stats.add(made, made * template.len() as u64);
        }
        made as usize
    }

    fn stats(&self) -> &QueueStats {
        &self.stats
    }
}

struct NullTx {
    _claim: Claim,
    stats: QueueStats,
}

impl TxQueue for NullTx {
    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        let n = burst.len();
        let mut bytes = 0u64;
        burst.drain_front(n, |f| bytes += f.len() as u64);
        if n > 0 {
            self.stats.add(n as u64, bytes);
        }
        n
    }

    fn stats(&self) -> &QueueStats {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_exactly_limit_packets_of_the_configured_size() {
        let cfg = NullConfig {
            size: 128,
            limit: Some(100),
            ..NullConfig::default()
        };
        let port = NullPort::new("null-limit", cfg).unwrap();
        let mut rx = port.open_rx(0).unwrap();
        let mut burst = Burst::new(32);
        let mut got = Vec::new();
        loop {
            let n = rx.rx_burst(&mut burst);
            if n == 0 {
                break;
            }
            got.push(n);
            assert!(burst
                .iter()
                .all(|f| f.len() == 128 && f.data() == port.template()));
            burst.free_all();
        }
        assert_eq!(got, [32, 32, 32, 4]);
        assert!(port.is_exhausted());
        assert_eq!(rx.stats().snapshot().packets, 100);
        assert_eq!(rx.stats().snapshot().bytes, 100 * 128);
        assert_eq!(rx.rx_burst(&mut burst), 0);
    }

    #[test]
    fn the_limit_is_shared_by_all_queues() {
        let cfg = NullConfig {
            queues: 2,
            limit: Some(50),
            ..NullConfig::default()
        };
        let port = NullPort::new("null-shared", cfg).unwrap();
        let mut q0 = port.open_rx(0).unwrap();
        let mut q1 = port.open_rx(1).unwrap();
        let mut burst = Burst::new(16);
        let mut total = 0;
        for i in 0.. {
            let q = if i % 2 == 0 { &mut q0 } else { &mut q1 };
            let n = q.rx_burst(&mut burst);
            assert!(burst.iter().all(|f| usize::from(f.rx_queue) == i % 2));
            burst.free_all();
            total += n;
            if n == 0 {
                break;
            }
        }
        assert_eq!(total, 50);
    }

    #[test]
    fn tx_frees_everything_and_the_pool_fills_up_again() {
        let port = NullPort::new("null-tx", NullConfig::default()).unwrap();
        let full = port.pool().available();
        let mut rx = port.open_rx(0).unwrap();
        let mut tx = port.open_tx(0).unwrap();
        let mut burst = Burst::new(64);
        for _ in 0..10 {
            assert_eq!(rx.rx_burst(&mut burst), 64);
            assert_eq!(port.pool().available(), full - 64);
            assert_eq!(tx.tx_burst(&mut burst), 64);
            assert!(burst.is_empty());
        }
        assert_eq!(port.pool().available(), full);
        let s = tx.stats().snapshot();
        assert_eq!((s.packets, s.bytes, s.total_dropped()), (640, 640 * 64, 0));
    }

    #[test]
    fn an_empty_pool_counts_no_buffer_and_spends_no_limit() {
        let cfg = NullConfig {
            limit: Some(10_000),
            ..NullConfig::default()
        };
        let port = NullPort::new("null-nobuf", cfg).unwrap();
        let hoard: Vec<_> = std::iter::from_fn(|| port.pool().alloc()).collect();
        let mut rx = port.open_rx(0).unwrap();
        let mut burst = Burst::new(32);
        assert_eq!(rx.rx_burst(&mut burst), 0);
        assert_eq!(rx.stats().snapshot().dropped(DropReason::NoBuffer), 1);
        assert_eq!(port.remaining(), Some(10_000));
        drop(hoard);
        assert_eq!(rx.rx_burst(&mut burst), 32);
        assert_eq!(port.remaining(), Some(10_000 - 32));
    }

    #[test]
    fn custom_templates_are_padded_or_cut_to_size() {
        let cfg = NullConfig {
            size: 70,
            template: Some(vec![0xab; 10]),
            ..NullConfig::default()
        };
        let port = NullPort::new("null-tmpl", cfg).unwrap();
        let mut rx = port.open_rx(0).unwrap();
        let mut burst = Burst::new(1);
        rx.rx_burst(&mut burst);
        let d = burst.get(0).unwrap().data();
        assert_eq!((&d[..10], &d[10..]), (&[0xab; 10][..], &[0u8; 60][..]));

        let cfg = NullConfig {
            size: 4,
            template: Some(vec![1, 2, 3, 4, 5]),
            ..NullConfig::default()
        };
        assert_eq!(
            NullPort::new("null-cut", cfg).unwrap().template(),
            [1, 2, 3, 4]
        );
    }

    #[test]
    fn the_default_template_is_a_valid_udp_packet() {
        for size in [42, 60, 64, 65, 1514, 9000] {
            let p = udp_template(size);
            assert_eq!(p.len(), size);
            assert_eq!(&p[12..14], [0x08, 0x00]);
            assert_eq!(
                checksum(&[&p[14..34]]),
                0,
                "IPv4 header checksum, size {size}"
            );
            assert_eq!(usize::from(u16::from_be_bytes([p[16], p[17]])), size - 14);
            let udp_len = u16::from_be_bytes([p[38], p[39]]);
            assert_eq!(usize::from(udp_len), size - 34);
            let mut pseudo = [0u8; 12];
            pseudo[..4].copy_from_slice(&p[26..30]);
            pseudo[4..8].copy_from_slice(&p[30..34]);
            pseudo[9] = 17;
            pseudo[10..].copy_from_slice(&udp_len.to_be_bytes());
            assert_eq!(
                checksum(&[&pseudo, &p[34..]]),
                0,
                "UDP checksum, size {size}"
            );
        }
        assert_eq!(udp_template(20), udp_template(42)[..20]);
    }

    #[test]
    fn bad_configs_are_named() {
        let e = NullPort::new(
            "n",
            NullConfig {
                size: 0,
                ..NullConfig::default()
            },
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "port n: packet size 0 out of range (1..=65280)"
        );
        let e = NullPort::new(
            "n",
            NullConfig {
                queues: 0,
                ..NullConfig::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("at least one queue"), "{e}");
        let port = NullPort::new("n", NullConfig::default()).unwrap();
        assert_eq!(
            (port.info().driver, port.info().mode.as_str()),
            ("null", "memory")
        );
        let _q = port.open_rx(0).unwrap();
        assert!(matches!(port.open_rx(0), Err(PortError::QueueInUse { .. })));
    }
}
