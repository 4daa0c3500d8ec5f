//! The dataplane's counters in the Prometheus text exposition format
//! (version 0.0.4), as `GET /metrics` serves them.
//!
//! Every family has `# HELP` and `# TYPE` lines; counters end in `_total`;
//! labels come from bounded sets only: `port` (the configured ports),
//! `verdict` (the five XDP actions), `reason` (the fixed drop reasons),
//! `hook` (ingress, egress), `code` (2xx, 4xx, 5xx). Nothing a packet
//! carries becomes a label, so a scrape's size does not grow with traffic.

use std::fmt::Write;

use super::stats::HostStackStats;
use crate::Stats;

/// Escapes a label value (backslash, double quote, newline).
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Writes metric families.
struct Writer {
    out: String,
}

impl Writer {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// One family with one sample per port.
    fn per_port<T: Copy + std::fmt::Display>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        ports: &[(String, T)],
    ) {
        self.family(name, kind, help);
        for (p, v) in ports {
            self.sample(name, &[("port", p)], *v);
        }
    }
}

/// Renders the dataplane's statistics and, when a host stack runs, its
/// counters.
pub fn render(stats: &Stats, host: Option<&HostStackStats>) -> String {
    let mut w = Writer {
        out: String::with_capacity(8192),
    };
    w.family(
        "sluice_uptime_seconds",
        "gauge",
        "Seconds since the dataplane started.",
    );
    w.sample(
        "sluice_uptime_seconds",
        &[],
        format_args!("{:.3}", stats.elapsed.as_secs_f64()),
    );
    let col = |f: &dyn Fn(&crate::PortSnapshot) -> u64| -> Vec<(String, u64)> {
        stats
            .ports
            .iter()
            .map(|p| (p.info.name.clone(), f(&p.total)))
            .collect()
    };
    for (name, help, f) in [
        (
            "sluice_port_rx_packets_total",
            "Packets received on the port.",
            (|s: &crate::PortSnapshot| s.rx_packets) as fn(&crate::PortSnapshot) -> u64,
        ),
        (
            "sluice_port_rx_bytes_total",
            "Bytes received on the port.",
            |s| s.rx_bytes,
        ),
        (
            "sluice_port_tx_packets_total",
            "Packets sent on the port.",
            |s| s.tx_packets,
        ),
        (
            "sluice_port_tx_bytes_total",
            "Bytes sent on the port.",
            |s| s.tx_bytes,
        ),
        (
            "sluice_port_batches_total",
            "Receive bursts processed on the port.",
            |s| s.batches,
        ),
        (
            "sluice_port_host_tx_packets_total",
            "Frames from the host stack moved to the port's TX queue.",
            |s| s.host_tx,
        ),
        (
            "sluice_program_runs_total",
            "Ingress program runs on the port.",
            |s| s.prog_runs,
        ),
        (
            "sluice_program_faults_total",
            "Program runs that faulted (counted as aborted).",
            |s| s.prog_faults,
        ),
    ] {
        w.per_port(name, "counter", help, &col(&f));
    }
    w.family(
        "sluice_program_run_seconds_total",
        "counter",
        "Time spent running ingress programs on the port.",
    );
    for p in &stats.ports {
        w.sample(
            "sluice_program_run_seconds_total",
            &[("port", &p.info.name)],
            format_args!("{:.9}", p.total.prog_ns as f64 / 1e9),
        );
    }
    w.family(
        "sluice_port_verdicts_total",
        "counter",
        "Packets by the verdict of the port's ingress program (no program: pass).",
    );
    for p in &stats.ports {
        let t = &p.total;
        for (v, n) in [
            ("drop", t.xdp_drop),
            ("tx", t.xdp_tx),
            ("redirect", t.xdp_redirect),
            ("pass", t.xdp_pass),
            ("aborted", t.xdp_aborted),
        ] {
            w.sample(
                "sluice_port_verdicts_total",
                &[("port", &p.info.name), ("verdict", v)],
                n,
            );
        }
    }
    w.family(
        "sluice_port_drops_total",
        "counter",
        "Packets the dataplane dropped on the port, by reason.",
    );
    for p in &stats.ports {
        for (reason, n) in p.total.drops() {
            w.sample(
                "sluice_port_drops_total",
                &[("port", &p.info.name), ("reason", reason)],
                n,
            );
        }
    }
    w.family(
        "sluice_program_version",
        "gauge",
        "Version of the program attached to a hook (0: none).",
    );
    for p in &stats.ports {
        for (hook, v) in [("ingress", p.ingress_version), ("egress", p.egress_version)] {
            w.sample(
                "sluice_program_version",
                &[("port", &p.info.name), ("hook", hook)],
                v,
            );
        }
    }
    render_queues(&mut w, stats);
    if let Some(h) = host {
        render_host(&mut w, h);
    }
    w.out
}

/// Per-queue families: labels `port`, `queue` (the port's queues, a
/// bounded set), `direction`, `verdict` and `reason`; the worker and core
/// of each queue in an info gauge.
fn render_queues(w: &mut Writer, stats: &Stats) {
    w.family(
        "sluice_queue_info",
        "gauge",
        "The worker and core serving each queue (value 1).",
    );
    for p in &stats.ports {
        let name = &p.info.name;
        let rx = p.rx_queues.iter().map(|q| ("rx", q.place));
        let tx = p.tx_queues.iter().map(|q| ("tx", q.place));
        for (dir, place) in rx.chain(tx) {
            let core = place
                .core
                .map_or_else(|| "none".to_string(), |c| c.to_string());
            w.sample(
                "sluice_queue_info",
                &[
                    ("port", name),
                    ("queue", &place.queue.to_string()),
                    ("direction", dir),
                    ("worker", &place.worker.to_string()),
                    ("core", &core),
                ],
                1,
            );
        }
    }
    type RxCol = fn(&crate::RxQueueStats) -> u64;
    for (name, help, f) in [
        (
            "sluice_queue_rx_packets_total",
            "Packets received on the queue.",
            (|q: &crate::RxQueueStats| q.counters.rx_packets) as RxCol,
        ),
        (
            "sluice_queue_rx_bytes_total",
            "Bytes received on the queue.",
            |q| q.counters.rx_bytes,
        ),
    ] {
        w.family(name, "counter", help);
        for p in &stats.ports {
            for q in &p.rx_queues {
                let queue = q.place.queue.to_string();
                w.sample(name, &[("port", &p.info.name), ("queue", &queue)], f(q));
            }
        }
    }
    type TxCol = fn(&crate::TxQueueStats) -> u64;
    for (name, help, f) in [
        (
            "sluice_queue_tx_packets_total",
            "Packets sent on the queue.",
            (|q: &crate::TxQueueStats| q.tx_packets) as TxCol,
        ),
        (
            "sluice_queue_tx_bytes_total",
            "Bytes sent on the queue.",
            |q| q.tx_bytes,
        ),
    ] {
        w.family(name, "counter", help);
        for p in &stats.ports {
            for q in &p.tx_queues {
                let queue = q.place.queue.to_string();
                w.sample(name, &[("port", &p.info.name), ("queue", &queue)], f(q));
            }
        }
    }
    w.family(
        "sluice_queue_verdicts_total",
        "counter",
        "Packets received on the queue by the ingress program's verdict.",
    );
    for p in &stats.ports {
        for q in &p.rx_queues {
            let queue = q.place.queue.to_string();
            let c = &q.counters;
            for (v, n) in [
                ("drop", c.xdp_drop),
                ("tx", c.xdp_tx),
                ("redirect", c.xdp_redirect),
                ("pass", c.xdp_pass),
                ("aborted", c.xdp_aborted),
            ] {
                w.sample(
                    "sluice_queue_verdicts_total",
                    &[("port", &p.info.name), ("queue", &queue), ("verdict", v)],
                    n,
                );
            }
        }
    }
    w.family(
        "sluice_queue_driver_drops_total",
        "counter",
        "Packets the driver or kernel dropped on the queue, by reason (drivers that report them).",
    );
    for p in &stats.ports {
        let rx = p.rx_queues.iter().map(|q| ("rx", q.place.queue, q.driver));
        let tx = p.tx_queues.iter().map(|q| ("tx", q.place.queue, q.driver));
        for (dir, queue, driver) in rx.chain(tx) {
            let Some(d) = driver else { continue };
            let queue = queue.to_string();
            for r in sluice_drivers::DropReason::ALL {
                w.sample(
                    "sluice_queue_driver_drops_total",
                    &[
                        ("port", &p.info.name),
                        ("queue", &queue),
                        ("direction", dir),
                        ("reason", r.name()),
                    ],
                    d.dropped(r),
                );
            }
        }
    }
}

fn render_host(w: &mut Writer, h: &HostStackStats) {
    let col = |f: fn(&super::HostPortSnapshot) -> u64| -> Vec<(String, u64)> {
        h.ports
            .iter()
            .map(|p| (p.name.clone(), f(&p.counters)))
            .collect()
    };
    w.per_port(
        "sluice_host_rx_frames_total",
        "counter",
        "Passed frames the host stack accepted on the port.",
        &col(|c| c.rx_frames),
    );
    w.per_port(
        "sluice_host_rx_bytes_total",
        "counter",
        "Bytes of the frames the host stack accepted on the port.",
        &col(|c| c.rx_bytes),
    );
    w.per_port(
        "sluice_host_tx_frames_total",
        "counter",
        "Frames the host stack sent on the port.",
        &col(|c| c.tx_frames),
    );
    w.per_port(
        "sluice_host_tx_bytes_total",
        "counter",
        "Bytes the host stack sent on the port.",
        &col(|c| c.tx_bytes),
    );
    w.per_port(
        "sluice_host_tx_deferred_total",
        "counter",
        "Transmissions the host stack put off because the port's host TX queue was full.",
        &col(|c| c.tx_deferred),
    );
    w.family(
        "sluice_host_drops_total",
        "counter",
        "Frames the host stack dropped on the port, by reason.",
    );
    for p in &h.ports {
        for (reason, n) in p.counters.drops() {
            w.sample(
                "sluice_host_drops_total",
                &[("port", &p.name), ("reason", reason)],
                n,
            );
        }
    }
    w.family(
        "sluice_host_addresses",
        "gauge",
        "Addresses the host stack owns on the port.",
    );
    for p in &h.ports {
        w.sample(
            "sluice_host_addresses",
            &[("port", &p.name)],
            p.addresses.len(),
        );
    }
    let x = &h.http;
    w.family(
        "sluice_http_connections_total",
        "counter",
        "HTTP connections accepted by the host stack.",
    );
    w.sample("sluice_http_connections_total", &[], x.connections);
    w.family(
        "sluice_http_requests_total",
        "counter",
        "HTTP requests handed to the handler.",
    );
    w.sample("sluice_http_requests_total", &[], x.requests);
    w.family(
        "sluice_http_responses_total",
        "counter",
        "HTTP responses by status class.",
    );
    for (code, n) in [
        ("2xx", x.responses_2xx),
        ("4xx", x.responses_4xx),
        ("5xx", x.responses_5xx),
    ] {
        w.sample("sluice_http_responses_total", &[("code", code)], n);
    }
    w.family(
        "sluice_http_unauthorized_total",
        "counter",
        "State-changing HTTP requests refused for a missing or wrong token.",
    );
    w.sample("sluice_http_unauthorized_total", &[], x.unauthorized);
    w.family(
        "sluice_http_rejected_total",
        "counter",
        "HTTP requests refused before the handler (malformed, too large, too slow).",
    );
    w.sample("sluice_http_rejected_total", &[], x.rejected);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PortSnapshot, PortStats};
    use sluice_drivers::PortInfo;

    #[test]
    fn every_family_is_declared_once_and_every_sample_parses() {
        let info = PortInfo {
            name: "ring:a\"b".into(),
            driver: "ring",
            ifindex: 1000,
            rx_queues: 1,
            tx_queues: 1,
            mode: "memory".into(),
        };
        let total = PortSnapshot {
            rx_packets: 10,
            xdp_pass: 4,
            xdp_drop: 6,
            prog_ns: 1_500_000_000,
            ..Default::default()
        };
        let place = crate::QueuePlace {
            port: 0,
            queue: 0,
            worker: 0,
            core: Some(1),
        };
        let stats = Stats {
            elapsed: std::time::Duration::from_millis(1500),
            ports: vec![PortStats {
                info,
                total,
                per_worker: vec![total],
                rx_queues: vec![crate::RxQueueStats {
                    place,
                    counters: crate::QueueSnapshot {
                        rx_packets: 10,
                        xdp_drop: 6,
                        xdp_pass: 4,
                        ..Default::default()
                    },
                    driver: Some(sluice_drivers::QueueStatsSnapshot {
                        packets: 12,
                        bytes: 0,
                        drops: [0, 2, 0, 0, 0, 0, 0],
                    }),
                }],
                tx_queues: vec![crate::TxQueueStats {
                    place,
                    tx_packets: 0,
                    tx_bytes: 0,
                    tx_full: 0,
                    driver: None,
                }],
                ingress_version: 2,
                egress_version: 0,
            }],
        };
        let host = HostStackStats {
            ports: vec![super::super::HostPortStats {
                port: 0,
                name: "ring:a\"b".into(),
                mac: String::new(),
                addresses: vec!["10.0.0.1/24".into()],
                counters: Default::default(),
            }],
            http: Default::default(),
        };
        let text = render(&stats, Some(&host));
        let mut declared = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(declared.insert(name.to_string()), "{name} declared twice");
                let kind = rest.split(' ').nth(1).unwrap();
                assert_eq!(name.ends_with("_total"), kind == "counter", "{line}");
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            let name = series.split('{').next().unwrap();
            assert!(declared.contains(name), "{name} has no TYPE line");
            value.parse::<f64>().unwrap();
        }
        assert!(text.contains("sluice_port_rx_packets_total{port=\"ring:a\\\"b\"} 10\n"));
        assert!(
            text.contains("sluice_port_verdicts_total{port=\"ring:a\\\"b\",verdict=\"drop\"} 6\n")
        );
        assert!(
            text.contains("sluice_program_run_seconds_total{port=\"ring:a\\\"b\"} 1.500000000\n")
        );
        assert!(
            text.contains("sluice_host_drops_total{port=\"ring:a\\\"b\",reason=\"malformed\"} 0\n")
        );
        assert!(text.contains(
            "sluice_queue_info{port=\"ring:a\\\"b\",queue=\"0\",direction=\"rx\",worker=\"0\",core=\"1\"} 1\n"
        ));
        assert!(text.contains(
            "sluice_queue_verdicts_total{port=\"ring:a\\\"b\",queue=\"0\",verdict=\"pass\"} 4\n"
        ));
        assert!(text.contains(
            "sluice_queue_driver_drops_total{port=\"ring:a\\\"b\",queue=\"0\",direction=\"rx\",reason=\"no_buffer\"} 2\n"
        ));
        assert!(!text.contains(
            "sluice_queue_driver_drops_total{port=\"ring:a\\\"b\",queue=\"0\",direction=\"tx\""
        ));
    }
}
