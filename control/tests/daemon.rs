//! `sluice daemon` end to end: the real binary started on a temporary
//! socket with null and ring ports (no root needed), driven by the real
//! `sluice` command line as an operator drives it.
//!
//! * programs load, show, replace (compare-and-swap), detach; a stale
//!   `--expect-id`, a bad ELF and a missing section are refused with the
//!   loader's message and nothing changes;
//! * 1,000 replacements through the CLI while traffic flows lose no packet;
//! * a blocklist map updated through the CLI changes verdicts at once;
//! * a `LIBBPF_PIN_BY_NAME` counter keeps its value across a replace;
//! * the socket is 0600 and another user cannot connect (as root);
//! * `capture` writes a pcapng that tshark reads, with verdict comments;
//! * `config check` names the line and field of every error.
//!
//! Every child is bounded in time; daemons are stopped through the API
//! (and killed by their handle if they do not stop).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");
const PROGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../bpf/tests/progs");
const PIN_COUNT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/progs/pin_count.o");

fn prog(name: &str) -> String {
    format!("{PROGS}/{name}.o")
}

/// A fresh directory (mode 0755, so other users may traverse it).
fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("daemon-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A finished CLI run.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }

    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "not one JSON object ({e}):\n{}\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// Runs `sluice ARGS` with a 60 s limit.
fn run(args: &[&str]) -> Run {
    let out = Command::new("timeout")
        .arg("60")
        .arg(SLUICE)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("sluice runs");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A daemon on a temporary socket.
struct Daemon {
    child: Child,
    socket: PathBuf,
    dir: PathBuf,
}

/// A daemon configuration: `extra` TOML at the top, the socket, the ports.
fn config_text(socket: &Path, ports: &[&str], extra: &str) -> String {
    let mut cfg = format!("{extra}\n[api]\nsocket = \"{}\"\n", socket.display());
    for p in ports {
        cfg.push_str(&format!("\n[[port]]\nspec = \"{p}\"\n"));
    }
    cfg
}

impl Daemon {
    /// Rewrites the configuration file (for `config reload`).
    fn rewrite_config(&self, ports: &[&str], extra: &str) {
        std::fs::write(
            self.dir.join("sluice.toml"),
            config_text(&self.socket, ports, extra),
        )
        .unwrap();
    }

    /// Starts `sluice daemon` with these `[[port]]` specs (and extra TOML).
    fn start(test: &str, ports: &[&str], extra: &str) -> Daemon {
        let dir = scratch(test);
        let socket = dir.join("sluice.sock");
        let cfg_path = dir.join("sluice.toml");
        std::fs::write(&cfg_path, config_text(&socket, ports, extra)).unwrap();
        let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
        let child = Command::new(SLUICE)
            .args(["daemon", "--config"])
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("daemon starts");
        let d = Daemon { child, socket, dir };
        let start = Instant::now();
        while UnixStream::connect(&d.socket).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "daemon did not come up: {}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    fn sock(&self) -> &str {
        self.socket.to_str().unwrap()
    }

    /// `sluice ARGS --socket S`.
    fn cli(&self, args: &[&str]) -> Run {
        let mut a: Vec<&str> = args.to_vec();
        a.extend(["--socket", self.sock()]);
        run(&a)
    }

    /// `sluice ARGS --socket S -j`, which must succeed.
    fn ok(&self, args: &[&str]) -> Value {
        let mut a: Vec<&str> = args.to_vec();
        a.push("-j");
        let r = self.cli(&a);
        assert!(r.ok(), "sluice {args:?} failed: {}\n{}", r.stdout, r.stderr);
        let v = r.json();
        assert_eq!(v["ok"], json!(true), "{v}");
        v
    }

    /// `sluice ARGS -j`, which must fail; the error message.
    fn refused(&self, args: &[&str]) -> String {
        let mut a: Vec<&str> = args.to_vec();
        a.push("-j");
        let r = self.cli(&a);
        assert!(!r.ok(), "sluice {args:?} should fail: {}", r.stdout);
        let v = r.json();
        assert_eq!(
            (v["ok"].clone(), v["v"].clone()),
            (json!(false), json!(1)),
            "{v}"
        );
        v["error"].as_str().unwrap().to_string()
    }

    /// A raw request on a fresh connection.
    fn raw(&self, req: &str) -> Value {
        let s = UnixStream::connect(&self.socket).unwrap();
        writeln!(&s, "{req}").unwrap();
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    }

    /// Port `i`'s counters.
    fn port(&self, i: usize) -> Value {
        self.ok(&["stats", "--count", "1", "-i", "0.05"])["ports"][i].clone()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(s) = UnixStream::connect(&self.socket) {
            let _ = writeln!(&s, r#"{{"v":1,"cmd":"daemon.stop"}}"#);
            let _ = BufReader::new(&s).read_line(&mut String::new());
        }
        let start = Instant::now();
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !std::thread::panicking() {
            assert!(
                !self.socket.exists(),
                "the daemon removes its socket on exit"
            );
        }
    }
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn prog_load_show_replace_detach_and_refusals() {
    let d = Daemon::start("lifecycle", &["null:size=64", "ring:a"], "");
    let macswap = prog("macswap");
    let lpm = prog("lpm_fw");
    let loaded = d.ok(&["prog", "load", &macswap, "--attach", "0:ingress"]);
    let id = n(&loaded["id"]);
    assert_eq!(n(&loaded["version"]), 1);

    let show = d.ok(&["prog", "show"]);
    let p = &show["programs"][0];
    assert_eq!((p["name"].as_str(), n(&p["id"])), (Some("xdp_macswap"), id));
    assert_eq!(p["attached"][0]["port"], json!("null0"));
    assert_eq!(p["attached"][0]["hook"], json!("ingress"));
    let text = d.cli(&["prog", "show"]);
    assert!(
        text.ok() && text.stdout.contains("name xdp_macswap"),
        "{}",
        text.stdout
    );
    std::thread::sleep(Duration::from_millis(200));
    let runs = n(&d.ok(&["prog", "show"])["programs"][0]["attached"][0]["run_cnt"]);
    assert!(runs > 0, "the program runs");

    // A stale --expect-id: refused, nothing changes.
    let before = d.ok(&["port", "list"]);
    let e = d.refused(&[
        "prog",
        "replace",
        "0",
        &lpm,
        "--expect-id",
        &(id + 100).to_string(),
    ]);
    assert!(e.contains("not the expected"), "{e}");
    assert_eq!(d.ok(&["port", "list"]), before);
    assert_eq!(
        d.ok(&["prog", "show"])["programs"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // A bad ELF and a missing section: the loader's message; the old
    // program keeps running.
    let bad = d.dir.join("bad.o");
    std::fs::write(&bad, b"\x7fELF not really").unwrap();
    let e = d.refused(&["prog", "replace", "0", bad.to_str().unwrap()]);
    assert!(e.contains("loading") && e.contains("ELF"), "{e}");
    let e = d.refused(&["prog", "replace", "0", &lpm, "--section", "xdp/nope"]);
    assert!(e.contains("no program or section \"xdp/nope\""), "{e}");
    let text = d.cli(&["prog", "replace", "0", &lpm, "--section", "nope"]);
    assert!(
        !text.ok() && text.stderr.starts_with("sluice: "),
        "{}",
        text.stderr
    );
    assert_eq!(d.ok(&["port", "list"]), before);
    let r1 = n(&d.port(0)["rx_packets"]);
    std::thread::sleep(Duration::from_millis(100));
    let p0 = d.port(0);
    assert!(n(&p0["rx_packets"]) > r1, "traffic still flows");
    assert_eq!(n(&p0["aborted"]), 0);

    // The right --expect-id: swapped.
    let r = d.ok(&[
        "prog",
        "replace",
        "null0",
        &lpm,
        "--expect-id",
        &id.to_string(),
    ]);
    let id2 = n(&r["id"]);
    assert_eq!((n(&r["old_id"]), n(&r["version"])), (id, 2));
    let dump = d.ok(&["prog", "dump", "xlated", &id2.to_string()]);
    assert!(dump["xlated"].as_array().unwrap().len() > 10);
    let text = d.cli(&["prog", "dump", "xlated", &id2.to_string()]);
    assert!(text.stdout.starts_with("   0: "), "{}", text.stdout);
    // The machine code, disassembled, each eBPF instruction before its code.
    let dump = d.ok(&["prog", "dump", "jited", &id2.to_string()]);
    let jited: Vec<&str> = dump["jited"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(n(&dump["bytes"]) > 0);
    assert!(jited.iter().any(|l| l.starts_with("; 0: ")), "{jited:#?}");
    assert!(jited.iter().any(|l| l.ends_with(": ret")), "{jited:#?}");
    assert!(jited.iter().all(|l| !l.contains("(bad)")), "{jited:#?}");
    let text = d.cli(&["prog", "dump", "jited", &id2.to_string()]);
    assert!(text.stdout.contains("; 0: "), "{}", text.stdout);

    // Detach: the hook is empty, the object is gone.
    assert_eq!(n(&d.ok(&["prog", "detach", "0:ingress"])["id"]), id2);
    assert_eq!(
        n(&d.ok(&["port", "list"])["ports"][0]["ingress_version"]),
        0
    );
    assert!(d.ok(&["prog", "show"])["programs"]
        .as_array()
        .unwrap()
        .is_empty());
    assert!(d
        .refused(&["prog", "detach", "0"])
        .contains("no program attached"));

    // Errors without -j: one line on stderr.
    let r = d.cli(&["map", "dump", "nothing"]);
    assert!(!r.ok() && r.stdout.is_empty());
    assert_eq!(r.stderr.trim(), "sluice: no map \"nothing\"");
    // A request in another schema version is refused.
    let v = d.raw(r#"{"v":9,"cmd":"stats"}"#);
    assert!(v["error"].as_str().unwrap().contains("version 9"), "{v}");
}

/// `port list` names the worker and core of every queue; `stats -e`
/// gives one line per queue, and the JSON per-queue counters add up to the
/// port's.
#[test]
fn port_list_and_stats_per_queue() {
    let allowed: Vec<usize> = {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        (0..n.min(2)).collect()
    };
    let cores = allowed
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let d = Daemon::start(
        "queues",
        &["null:size=64,queues=2"],
        &format!("cores = \"{cores}\""),
    );
    d.ok(&["prog", "load", &prog("macswap"), "--attach", "0"]);
    let list = d.ok(&["port", "list"]);
    let queues = list["ports"][0]["queues"].as_array().unwrap().clone();
    println!("port list queues: {queues:?}");
    let workers = allowed.len();
    assert_eq!(
        queues.len(),
        2 + workers,
        "2 RX queues, one TX queue per worker"
    );
    for q in &queues {
        let (queue, worker) = (n(&q["queue"]) as usize, n(&q["worker"]) as usize);
        if q["direction"] == json!("rx") {
            assert_eq!(
                worker,
                queue % workers,
                "RX queues round-robin over workers"
            );
        } else {
            assert_eq!(worker, queue, "TX queue w is worker w's");
        }
        assert_eq!(n(&q["core"]) as usize, allowed[worker], "{q}");
    }
    let text = d.cli(&["port", "list"]);
    assert!(text.ok(), "{}", text.stderr);
    let rx1 = format!("null0 rx 1 {} {}", 1 % workers, allowed[1 % workers]);
    let squeezed: Vec<String> = text
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert!(squeezed.contains(&rx1), "{rx1:?} in:\n{}", text.stdout);

    std::thread::sleep(Duration::from_millis(200));
    let p = d.port(0);
    let rxq = p["queues"]["rx"].as_array().unwrap();
    let sum: u64 = rxq.iter().map(|q| n(&q["rx_packets"])).sum();
    println!(
        "per queue rx: {:?}, port rx {}",
        rxq.iter().map(|q| n(&q["rx_packets"])).collect::<Vec<_>>(),
        n(&p["rx_packets"])
    );
    assert!(
        rxq.iter().all(|q| n(&q["xdp_tx"]) > 0),
        "both queues forward: {p}"
    );
    // Counters are read one after another while traffic flows: the
    // queues' sum and the port's total are close, not equal.
    assert!(sum > 0 && n(&p["rx_packets"]) > 0);
    let txq = p["queues"]["tx"].as_array().unwrap();
    assert_eq!(txq.len(), workers);

    let e = d.cli(&["stats", "-e", "--count", "1", "-i", "0.2"]);
    assert!(e.ok(), "{}", e.stderr);
    println!("{}", e.stdout);
    for want in ["rx q0", "rx q1", "tx q0", "drops:"] {
        assert!(e.stdout.contains(want), "{want:?} in:\n{}", e.stdout);
    }
}

#[test]
fn thousand_replacements_lose_no_packet() {
    // Probe: how fast this build forwards and how fast the CLI swaps.
    let macswap = prog("macswap");
    // The program is there from the first packet (from the configuration).
    let cfg = format!("program = \"{macswap}\"");
    let probe = Daemon::start("swaps-probe", &["null:size=64"], &cfg);
    let t = Instant::now();
    for _ in 0..20 {
        probe.ok(&["prog", "replace", "0", &macswap]);
    }
    let per_swap = t.elapsed().as_secs_f64() / 20.0;
    let a = n(&probe.port(0)["rx_packets"]);
    let t = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let pps = (n(&probe.port(0)["rx_packets"]) - a) as f64 / t.elapsed().as_secs_f64();
    drop(probe);

    // Enough packets to outlast 1,000 swaps (twice over).
    let limit = ((pps * per_swap * 1000.0 * 2.0) as u64).max(100_000);
    let spec = format!("null:size=64,limit={limit}");
    let d = Daemon::start("swaps", &[&spec], &cfg);
    for i in 0..1000 {
        let r = d.cli(&["prog", "replace", "0", &macswap]);
        assert!(r.ok(), "swap {i}: {}", r.stderr);
    }
    let at_last_swap = d.port(0);
    assert!(
        n(&at_last_swap["rx_packets"]) < limit,
        "traffic must still flow during the swaps ({} of {limit})",
        at_last_swap["rx_packets"]
    );
    assert_eq!(n(&at_last_swap["ingress_version"]), 1001);
    assert_eq!(n(&at_last_swap["swaps"]["ingress"]), 1001);
    let start = Instant::now();
    let p = loop {
        let p = d.port(0);
        if n(&p["rx_packets"]) == limit && n(&p["tx_packets"]) == limit {
            break p;
        }
        assert!(
            start.elapsed().as_secs_f64() < 60.0 + 2.0 * limit as f64 / pps,
            "traffic did not finish: {p}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // Every packet got exactly one verdict (XDP_TX) and was sent.
    assert_eq!(n(&p["tx_verdicts"]), limit, "{p}");
    assert_eq!(n(&p["aborted"]), 0, "{p}");
    for (reason, v) in p["dropped"].as_object().unwrap() {
        assert_eq!(n(v), 0, "dropped {reason}: {p}");
    }
    // Old objects are freed: only the running one is left.
    assert_eq!(
        d.ok(&["prog", "show"])["programs"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    eprintln!(
        "1000 swaps through the CLI ({:.1} ms each) over {limit} packets: 0 lost",
        per_swap * 1e3
    );
}

#[test]
fn blocklist_map_update_changes_verdicts_at_once() {
    let d = Daemon::start("blocklist", &["null:size=64"], "");
    d.ok(&["prog", "load", &prog("lpm_fw"), "--attach", "0"]);
    std::thread::sleep(Duration::from_millis(100));
    let p = d.port(0);
    assert!(
        n(&p["passed"]) > 0 && n(&p["dropped"]["xdp_drop"]) == 0,
        "{p}"
    );

    // Block 198.18.0.1 (the null port's source): {prefixlen 32, addr}
    // -> {action XDP_DROP, pad, hits}.
    let key = ["key", "32", "0", "0", "0", "198", "18", "0", "1"];
    let mut args = vec!["map", "update", "src_rules"];
    args.extend(key);
    args.extend(["value", "0x01", "0", "0", "0", "0", "0", "0", "0"]);
    args.extend(["0", "0", "0", "0", "0", "0", "0", "0"]);
    d.ok(&args);
    let passed = n(&d.port(0)["passed"]);
    std::thread::sleep(Duration::from_millis(200));
    let p = d.port(0);
    assert!(
        n(&p["passed"]) - passed <= 64,
        "at most one burst in flight passes after the update: {p}"
    );
    assert!(n(&p["dropped"]["xdp_drop"]) > 0, "{p}");

    // Lookup with bpftool's syntax and with a contiguous hex key.
    let mut args = vec!["map", "lookup", "src_rules"];
    args.extend(key);
    let e = d.ok(&args);
    assert!(
        e["value"].as_str().unwrap().starts_with("0100000000000000"),
        "{e}"
    );
    let e2 = d.ok(&["map", "lookup", "src_rules", "key", "20000000c6120001"]);
    assert_eq!(e2["key"], e["key"]);
    let text = d.cli(&["map", "dump", "src_rules"]);
    assert!(
        text.stdout
            .contains("key: 20 00 00 00 c6 12 00 01  value: 01 00 00 00")
            && text.stdout.contains("Found 1 element"),
        "{}",
        text.stdout
    );
    let shown = d.ok(&["map", "show"]);
    assert!(shown["maps"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == "src_rules"));

    // Unblock: traffic passes again.
    let mut args = vec!["map", "delete", "src_rules"];
    args.extend(key);
    d.ok(&args);
    let passed = n(&d.port(0)["passed"]);
    std::thread::sleep(Duration::from_millis(200));
    assert!(n(&d.port(0)["passed"]) > passed);
    // Wrong sizes are refused with the sizes.
    let e = d.refused(&["map", "lookup", "src_rules", "key", "1", "2"]);
    assert!(e.contains("key has 2 bytes, the map takes 8"), "{e}");
}

/// `config reload` (and SIGHUP): unchanged programs keep running, changed
/// ones are swapped in with the pinned counter carried over, a hook the
/// file no longer names is emptied (unless a command put its program
/// there), and every bad reload is refused with nothing changed.
#[test]
fn config_reload_swaps_programs_and_keeps_pinned_maps() {
    let ports = ["null:size=64"];
    let with = |obj: &str| format!("program = \"{obj}\"");
    let d = Daemon::start("reload", &ports, &with(PIN_COUNT));
    let count = || {
        let v = d.ok(&["map", "lookup", "pkt_count", "key", "0", "0", "0", "0"]);
        u64::from_le_bytes(
            hex::decode(v["value"].as_str().unwrap()).unwrap()[..8]
                .try_into()
                .unwrap(),
        )
    };
    let prog_ids = || -> Vec<(u64, String)> {
        d.ok(&["prog", "show"])["programs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| !p["attached"].as_array().unwrap().is_empty())
            .map(|p| (n(&p["id"]), p["name"].as_str().unwrap().to_string()))
            .collect()
    };
    let pkt_count_id = || {
        d.ok(&["map", "show"])["maps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "pkt_count")
            .map(|m| n(&m["id"]))
    };
    std::thread::sleep(Duration::from_millis(100));
    let first = prog_ids();
    assert_eq!(first.len(), 1);
    let map_id = pkt_count_id().unwrap();

    // The same file again: nothing to do.
    let r = d.ok(&["config", "reload"]);
    assert!(r["changed"].as_array().unwrap().is_empty(), "{r}");
    assert_eq!(n(&r["unchanged"][0]["id"]), first[0].0, "{r}");
    assert_eq!(prog_ids(), first);

    // A new object (a copy elsewhere): swapped in; the pinned counter is
    // the very same map and keeps counting from where it was.
    let copy = d.dir.join("pin_count_v2.o");
    std::fs::copy(PIN_COUNT, &copy).unwrap();
    d.rewrite_config(&ports, &with(copy.to_str().unwrap()));
    let before = count();
    let r = d.ok(&["config", "reload"]);
    println!("reload: {r}");
    let second = prog_ids();
    assert_eq!(n(&r["changed"][0]["old_id"]), first[0].0, "{r}");
    assert_eq!(n(&r["changed"][0]["id"]), second[0].0, "{r}");
    assert_ne!(second[0].0, first[0].0);
    assert_eq!(pkt_count_id(), Some(map_id), "the pinned map carried over");
    std::thread::sleep(Duration::from_millis(100));
    let after = count();
    assert!(
        after > before,
        "the new version counts on: {before} -> {after}"
    );

    // Refusals: each names the problem; nothing changes.
    let refused = |extra: &str, want: &str| {
        let mut text = config_text(&d.socket, &ports, extra);
        if extra == "syntax" {
            text.push_str("\n[[port]\n");
        }
        std::fs::write(d.dir.join("sluice.toml"), text).unwrap();
        let e = d.refused(&["config", "reload"]);
        assert!(e.contains(want), "{want:?} in {e:?}");
        assert_eq!(prog_ids(), second, "{e}");
    };
    refused(&format!("{}\ncores = \"0-99\"", with(PIN_COUNT)), "cores");
    refused(
        &format!("{}\nengine = \"interp\"", with(PIN_COUNT)),
        "engine changed, which only a restart applies",
    );
    refused("syntax", "sluice.toml");
    refused(&with("/nonexistent/x.o"), "does not exist");
    let bad = d.dir.join("bad.o");
    std::fs::write(&bad, b"\x7fELF not really").unwrap();
    refused(&with(bad.to_str().unwrap()), "null0:ingress: loading");
    assert_eq!(pkt_count_id(), Some(map_id), "the pin table is as it was");
    let r1 = n(&d.port(0)["rx_packets"]);
    std::thread::sleep(Duration::from_millis(50));
    assert!(n(&d.port(0)["rx_packets"]) > r1, "traffic still flows");

    // SIGHUP: macswap from the file; the log says so.
    d.rewrite_config(&ports, &with(&prog("macswap")));
    let ok = Command::new("kill")
        .args(["-HUP", &d.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let start = Instant::now();
    while prog_ids().first().map(|p| p.1.as_str()) != Some("xdp_macswap") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "SIGHUP did not reload: {}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        d.log().contains("SIGHUP: configuration reloaded"),
        "{}",
        d.log()
    );
    assert_eq!(
        pkt_count_id(),
        Some(map_id),
        "still pinned after its last user left"
    );

    // The file names no program: the hook it filled is emptied...
    d.rewrite_config(&ports, "");
    let r = d.ok(&["config", "reload"]);
    assert_eq!(r["detached"].as_array().unwrap().len(), 1, "{r}");
    assert!(prog_ids().is_empty());
    // ...but a program attached by command stays.
    d.ok(&["prog", "load", &prog("macswap"), "--attach", "0"]);
    let r = d.ok(&["config", "reload"]);
    assert!(r["detached"].as_array().unwrap().is_empty(), "{r}");
    assert_eq!(prog_ids().len(), 1);
    let text = d.cli(&["config", "reload"]);
    assert!(
        text.ok() && text.stdout.starts_with("reloaded "),
        "{}",
        text.stdout
    );
}

#[test]
fn pinned_counter_survives_replace() {
    let cfg = format!("program = \"{PIN_COUNT}\"");
    let d = Daemon::start("pinned", &["null:size=64,limit=1000"], &cfg);
    let start = Instant::now();
    while n(&d.port(0)["rx_packets"]) < 1000 {
        assert!(start.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = d.ok(&["map", "lookup", "pkt_count", "key", "0", "0", "0", "0"]);
    assert_eq!(before["value"], json!(hex::encode(1000u64.to_le_bytes())));
    let shown = d.ok(&["map", "show"]);
    let m = shown["maps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "pkt_count")
        .unwrap()
        .clone();
    assert_eq!(m["pinned"], json!("by_name"));

    d.ok(&["prog", "replace", "0", PIN_COUNT]);
    let after = d.ok(&["map", "lookup", "pkt_count", "key", "0", "0", "0", "0"]);
    assert_eq!(
        after["value"], before["value"],
        "the count survives the replace"
    );
    let shown = d.ok(&["map", "show"]);
    let m2 = shown["maps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "pkt_count")
        .unwrap()
        .clone();
    assert_eq!(m2["id"], m["id"], "the very same map");

    // A map pinned by command (not declared LIBBPF_PIN_BY_NAME) keeps its
    // elements too: the daemon copies them into the new version's map.
    d.ok(&["prog", "replace", "0", &prog("lpm_fw")]);
    d.ok(&[
        "map",
        "update",
        "src_rules",
        "key",
        "2000000001020304",
        "value",
        "01000000000000000700000000000000",
    ]);
    d.ok(&["map", "pin", "src_rules"]);
    let r = d.ok(&["prog", "replace", "0", &prog("lpm_fw")]);
    assert!(
        r["notes"][0]
            .as_str()
            .unwrap()
            .contains("1 elements copied"),
        "{r}"
    );
    let e = d.ok(&["map", "lookup", "src_rules", "key", "2000000001020304"]);
    assert_eq!(e["value"], json!("01000000000000000700000000000000"));
    d.ok(&["map", "unpin", "src_rules"]);
    assert!(d
        .refused(&["map", "unpin", "src_rules"])
        .contains("no map pinned"));
}

#[test]
fn socket_is_owner_only() {
    let d = Daemon::start("socket", &["null:size=64"], "[log]\nformat = \"json\"\n");
    // Logs are JSON lines when asked.
    d.ok(&["port", "list"]);
    let log = d.log();
    assert!(log.contains("sluice daemon ready"), "{log}");
    for l in log.lines() {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v["fields"].is_object(), "{l}");
    }
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // A second daemon on a live socket is refused.
    let cfg = d.dir.join("sluice.toml");
    let r = run(&["daemon", "--config", cfg.to_str().unwrap()]);
    assert!(
        !r.ok() && r.stderr.contains("already listening"),
        "{}",
        r.stderr
    );

    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    if !root {
        assert!(
            std::env::var("CI").ok().as_deref() != Some("true"),
            "CI must run this test as root"
        );
        eprintln!("SKIPPED: socket_is_owner_only other-user check needs root");
        return;
    }
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            SLUICE,
            "port",
            "list",
            "-j",
            "--socket",
        ])
        .arg(&d.socket)
        .output()
        .expect("setpriv runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "nobody must not connect: {stdout}");
    assert!(stdout.contains("Permission denied"), "{stdout}");
    assert!(d.cli(&["port", "list"]).ok(), "the owner can");
}

#[test]
fn capture_writes_pcapng_with_verdicts() {
    if Command::new("tshark").arg("-v").output().is_err() {
        assert!(
            std::env::var("CI").ok().as_deref() != Some("true"),
            "tshark missing in CI"
        );
        eprintln!("SKIPPED: capture_writes_pcapng_with_verdicts: no tshark");
        return;
    }
    let d = Daemon::start("capture", &["null:size=64"], "");
    d.ok(&["prog", "load", &prog("lpm_fw"), "--attach", "0"]);
    d.ok(&[
        "map",
        "update",
        "src_rules",
        "key",
        "20000000c6120001",
        "value",
        "01000000000000000000000000000000",
    ]);
    let file = d.dir.join("drops.pcapng");
    let r = d.ok(&[
        "capture",
        "0",
        "--verdict",
        "drop",
        "-w",
        file.to_str().unwrap(),
        "--count",
        "10",
    ]);
    assert_eq!(n(&r["packets"]), 10, "{r}");
    let out = Command::new("tshark")
        .arg("-r")
        .arg(&file)
        .args(["-T", "fields", "-e", "frame.comment", "-e", "ip.src"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 10, "{text}");
    for l in lines {
        assert_eq!(l, "verdict=XDP_DROP\t198.18.0.1", "{text}");
    }
    let e = d.refused(&[
        "capture",
        "0",
        "--verdict",
        "bogus",
        "-w",
        file.to_str().unwrap(),
    ]);
    assert!(e.contains("verdict"), "{e}");
}

#[test]
fn config_check_names_every_error() {
    let dir = scratch("config");
    let f = dir.join("bad.toml");
    std::fs::write(
        &f,
        "cores = \"2-1\"\nbogus = true\n\n[log]\nformat = \"xml\"\n\n[[port]]\nspec = \"null:size=abc\"\n",
    )
    .unwrap();
    let r = run(&["config", "check", f.to_str().unwrap()]);
    assert!(!r.ok());
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", r.stdout);
    for (l, (line, field)) in lines.iter().zip([
        (1, "cores"),
        (2, "bogus"),
        (5, "log.format"),
        (8, "port[0].spec"),
    ]) {
        assert!(l.contains(&format!("line {line}: {field}: ")), "{l}");
    }
    let j = run(&["config", "check", "-j", f.to_str().unwrap()]).json();
    assert_eq!(j["errors"].as_array().unwrap().len(), 4);
    let good = dir.join("good.toml");
    std::fs::write(&good, "[[port]]\nspec = \"ring:a\"\n").unwrap();
    assert!(run(&["config", "check", good.to_str().unwrap()]).ok());
    // The daemon refuses the bad file with the same messages.
    let r = run(&["daemon", "--config", f.to_str().unwrap()]);
    assert!(
        !r.ok() && r.stderr.contains("line 8: port[0].spec"),
        "{}",
        r.stderr
    );
}

#[test]
fn map_event_pipe_streams_perf_samples() {
    let d = Daemon::start("event_pipe", &["null:size=64"], "");
    d.ok(&["prog", "load", &prog("perf_output"), "--attach", "0"]);
    // JSON: one line per sample, then the answer.
    let r = d.cli(&["map", "event_pipe", "events", "--count", "6", "-j"]);
    assert!(r.ok(), "{}\n{}", r.stdout, r.stderr);
    let all: Vec<Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The null port sends at full speed, so the ring may overflow between
    // two reads: "lost" lines come between the samples, and the answer
    // sums them.
    let (answer, events) = all.split_last().expect("an answer");
    let (lost, lines): (Vec<&Value>, Vec<&Value>) =
        events.iter().partition(|l| l["event"] == json!("lost"));
    assert_eq!(lines.len(), 6, "{}", r.stdout);
    assert_eq!(answer["ok"], json!(true), "{answer}");
    assert_eq!(n(&answer["samples"]), 6, "{answer}");
    let lost_sum: u64 = lost.iter().map(|l| n(&l["lost"])).sum();
    assert_eq!(n(&answer["lost"]), lost_sum, "{}", r.stdout);
    let mut big = 0;
    for l in lines {
        assert_eq!(l["event"], json!("sample"), "{l}");
        let cpu = n(&l["cpu"]);
        assert_eq!(l["index"], l["cpu"], "{l}");
        let data = hex::decode(l["data"].as_str().unwrap()).unwrap();
        if data.len() == 4 {
            // rets[5]: two bytes of the struct into slot 0, from worker 0.
            assert_eq!((cpu, &data[..]), (0, &[0xce, 0x51, 0, 0][..]), "{l}");
            continue;
        }
        big += 1;
        // struct meta {magic, pkt_len 64, sampled 64, seq}, 64 packet
        // bytes (IPv4 from 198.18.0.1), no padding needed (12 + 64 = 76).
        assert_eq!(data.len(), 76, "{l}");
        assert_eq!(data[..8], [0xce, 0x51, 0x51, 0, 64, 0, 64, 0], "{l}");
        assert_eq!(data[12 + 12..12 + 14], [0x08, 0x00], "{l}");
        assert_eq!(data[12 + 26..12 + 30], [198, 18, 0, 1], "{l}");
    }
    assert!(big >= 2, "{}", r.stdout);
    // Text, as bpftool words it.
    let r = d.cli(&["map", "event_pipe", "events", "--count", "2"]);
    assert!(r.ok(), "{}\n{}", r.stdout, r.stderr);
    let text: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| !(l.starts_with("lost ") && l.ends_with(" events")))
        .collect();
    assert_eq!(text.len(), 2, "{}", r.stdout);
    for l in text {
        assert!(l.starts_with("CPU: 0 index: 0: ce 51 "), "{l}");
    }
    assert!(r.stderr.contains("2 samples"), "{}", r.stderr);
    // Not a perf event array; not over HTTP-only paths.
    let e = d.refused(&["map", "event_pipe", "rets", "--count", "1"]);
    assert!(e.contains("not a perf_event_array"), "{e}");
    let e = d.refused(&["map", "event_pipe", "nope", "--count", "1"]);
    assert!(e.contains("no map"), "{e}");
}
