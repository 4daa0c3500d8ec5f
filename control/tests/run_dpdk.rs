//! `sluice run` over DPDK ports (the `dpdk` feature, default in this
//! binary): the real binary with virtual devices and no huge pages.
//!
//! * two `net_null` ports forward to each other through a redirect
//!   program, every packet received is sent;
//! * a program that pushes 200 bytes with `bpf_xdp_adjust_head` (more than
//!   DPDK's 128 of mbuf headroom) and sends the frame back out of a
//!   `net_pcap` port: DPDK's own pcap writer sees the frames intact.

#![cfg(feature = "dpdk")]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_drivers::pcap::{Reader, Writer, WriterOptions};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");
const PROGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/progs");

/// Runs `sluice ARGS`, killed after a minute; returns (success, stdout, stderr).
fn sluice(args: &[&str]) -> (bool, String, String) {
    let mut child = Command::new(SLUICE)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sluice starts");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("sluice {} did not exit within 60 s", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(args: &[&str]) -> Value {
    let (ok, out, err) = sluice(args);
    assert!(ok, "sluice {} failed:\n{err}\n{out}", args.join(" "));
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

fn scratch(test: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("run_dpdk-{test}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn two_null_ports_forward_to_each_other() {
    let prog = format!("{PROGS}/dpdk_fwd.o");
    let v = json(&[
        "run",
        "--port",
        "dpdk:net_null0",
        "--port",
        "dpdk:net_null1",
        "--prog",
        &prog,
        "--duration",
        "2",
        "-j",
    ]);
    let ports = v["ports"].as_array().expect("ports");
    assert_eq!(ports.len(), 2);
    for (p, name) in ports.iter().zip(["dpdk:net_null0", "dpdk:net_null1"]) {
        assert_eq!(p["name"], name);
        let rx = p["rx_packets"].as_u64().unwrap();
        assert!(rx > 10_000, "{name} received {rx}");
        assert_eq!(p["redirected"].as_u64(), Some(rx), "{p}");
        assert_eq!(p["dropped"]["redirect_invalid"].as_u64(), Some(0));
    }
    // What one port received, the other sent.
    assert_eq!(ports[0]["rx_packets"], ports[1]["tx_packets"]);
    assert_eq!(ports[1]["rx_packets"], ports[0]["tx_packets"]);
}

#[test]
fn headers_pushed_past_dpdks_headroom_leave_intact() {
    let dir = scratch("push200");
    let input = dir.join("in.pcap");
    let output = dir.join("out.pcap");
    let mut w = Writer::create(&input, WriterOptions::default()).unwrap();
    let mut sent = Vec::new();
    for i in 0..20u8 {
        let len = 60 + usize::from(i) * 50;
        let p: Vec<u8> = (0..len).map(|k| (k as u8).wrapping_add(i)).collect();
        w.write_packet(u64::from(i) * 1000, &p).unwrap();
        sent.push(p);
    }
    drop(w);
    let spec = format!(
        "dpdk:net_pcap0,rx_pcap={},tx_pcap={}",
        input.display(),
        output.display()
    );
    let prog = format!("{PROGS}/push200.o");
    let v = json(&[
        "run",
        "--port",
        &spec,
        "--prog",
        &prog,
        "--duration",
        "1",
        "-j",
    ]);
    assert_eq!(v["ports"][0]["tx_packets"].as_u64(), Some(20), "{v}");
    let header: Vec<u8> = (0..200u32).map(|i| (i as u8) ^ 0x5a).collect();
    let r = Reader::open(&output).unwrap();
    let got: Vec<Vec<u8>> = r.packets().map(|p| p.data.to_vec()).collect();
    assert_eq!(got.len(), 20);
    for (g, s) in got.iter().zip(&sent) {
        assert_eq!(&g[..200], &header[..]);
        assert_eq!(&g[200..], &s[..]);
    }
}

#[test]
fn a_device_that_does_not_probe_is_one_error_line() {
    let (ok, out, err) = sluice(&[
        "run",
        "--port",
        "dpdk:net_nosuchpmd0",
        "--prog",
        &format!("{PROGS}/dpdk_fwd.o"),
        "--duration",
        "1",
    ]);
    assert!(!ok);
    assert!(out.is_empty());
    let ours: Vec<&str> = err.lines().filter(|l| !l.starts_with("EAL: ")).collect();
    assert_eq!(ours.len(), 1, "{err}");
    assert!(ours[0].contains("cannot probe \"net_nosuchpmd0\""), "{err}");
}
