//! Host-stack counters: per port, lock-free, written by the host thread and
//! read by anyone (metrics, `/status`, tests).
//!
//! Like the workers' counters, every drop is counted by reason, never as one
//! number: a frame the stack could not parse is not a frame it had no
//! buffer for.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($(#[$m:meta])* $name:ident / $snap:ident { $($(#[$fm:meta])* $f:ident),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Default)]
        pub struct $name {
            $($(#[$fm])* pub $f: AtomicU64,)*
        }

        /// A copy of the counters.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct $snap {
            $($(#[$fm])* pub $f: u64,)*
        }

        impl $name {
            /// Reads every counter.
            pub fn snapshot(&self) -> $snap {
                $snap { $($f: self.$f.load(Ordering::Relaxed),)* }
            }
        }

        impl std::ops::AddAssign for $snap {
            fn add_assign(&mut self, o: $snap) {
                $(self.$f += o.$f;)*
            }
        }
    };
}

counters! {
    /// One port's host-stack counters.
    HostPortCounters / HostPortSnapshot {
        /// Passed frames handed to smoltcp.
        rx_frames,
        /// Their bytes.
        rx_bytes,
        /// Dropped: truncated, a length field that lies, a bad header.
        rx_malformed,
        /// Dropped: an IPv4 header, TCP, UDP, ICMP or ICMPv6 checksum is wrong.
        rx_bad_checksum,
        /// Dropped: an EtherType the stack does not speak (VLAN tags, LLDP, ...).
        rx_unsupported,
        /// Dropped: unicast to another MAC address.
        rx_other_host,
        /// Dropped: the port has no host address (nobody to answer).
        rx_no_interface,
        /// Frames queued for the port's workers to send.
        tx_frames,
        /// Their bytes.
        tx_bytes,
        /// Dropped: the port's host TX queue stayed full.
        tx_queue_full,
        /// Transmissions put off because the host TX queue was full (smoltcp
        /// retries them; nothing is lost).
        tx_deferred,
        /// Transmissions put off or dropped: the host stack's pool was empty.
        tx_no_buffer,
        /// Dropped: a frame larger than a pool buffer.
        tx_oversize,
    }
}

counters! {
    /// The HTTP service's counters (all ports).
    HttpCounters / HttpSnapshot {
        /// Connections accepted.
        connections,
        /// Requests parsed and handed to the handler.
        requests,
        /// Responses 2xx.
        responses_2xx,
        /// Responses 4xx (including the rejections below).
        responses_4xx,
        /// Responses 5xx.
        responses_5xx,
        /// State-changing requests refused for a missing or wrong token.
        unauthorized,
        /// Requests refused before the handler: malformed, too large, too slow.
        rejected,
    }
}

impl HostPortCounters {
    /// Adds to a counter.
    #[inline]
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

impl HostPortSnapshot {
    /// Every frame the host stack dropped, by reason.
    pub fn drops(&self) -> [(&'static str, u64); 8] {
        [
            ("malformed", self.rx_malformed),
            ("bad_checksum", self.rx_bad_checksum),
            ("unsupported", self.rx_unsupported),
            ("other_host", self.rx_other_host),
            ("no_interface", self.rx_no_interface),
            ("tx_queue_full", self.tx_queue_full),
            ("no_buffer", self.tx_no_buffer),
            ("oversize", self.tx_oversize),
        ]
    }

    /// Received frames that were dropped before smoltcp saw them.
    pub fn rx_dropped(&self) -> u64 {
        self.rx_malformed
            + self.rx_bad_checksum
            + self.rx_unsupported
            + self.rx_other_host
            + self.rx_no_interface
    }
}

/// One port as the host stack sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPortStats {
    /// Port index in the dataplane.
    pub port: usize,
    /// Port name.
    pub name: String,
    /// MAC address the stack uses on it (empty when it has no interface).
    pub mac: String,
    /// Addresses it owns now (static, link-local, DHCP lease).
    pub addresses: Vec<String>,
    /// Counters.
    pub counters: HostPortSnapshot,
}

/// A snapshot of the whole host stack.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostStackStats {
    /// Every port of the dataplane, in order.
    pub ports: Vec<HostPortStats>,
    /// The HTTP service.
    pub http: HttpSnapshot,
}

impl HostStackStats {
    /// Sum over ports.
    pub fn total(&self) -> HostPortSnapshot {
        let mut t = HostPortSnapshot::default();
        for p in &self.ports {
            t += p.counters;
        }
        t
    }
}
