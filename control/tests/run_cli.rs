//! `sluice run` end to end: the real binary, run as a user runs it, with
//! its output parsed and checked.
//!
//! * `-j` prints one JSON object with the documented fields, and the
//!   counts add up;
//! * a capture file goes in through a pcap port and comes out of it with
//!   exactly the packets the program made;
//! * a `--config` file does what the flags do; a bad one names the line
//!   and the field;
//! * a bad `--port`, a missing object, a missing section get one clear
//!   error line and a non-zero exit.
//!
//! Every run is bounded: a child that outlives its time is killed and the
//! test fails. Files go to a directory of their own per test under Cargo's
//! `CARGO_TARGET_TMPDIR`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_drivers::null::udp_template;
use sluice_drivers::pcap::{Reader, Writer, WriterOptions};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");
/// The MAC-swap object (swap the Ethernet addresses, XDP_TX; frames
/// shorter than an Ethernet header are dropped).
const MACSWAP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../bpf/tests/progs/macswap.o");
/// Longest any one run may take.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// What a finished run left behind.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// The one JSON object a `-j` run prints.
    fn json(&self) -> Value {
        assert!(self.ok(), "sluice failed: {}\n{}", self.stderr, self.stdout);
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}):\n{}", self.stdout))
    }

    /// The error of a failed run: exactly one line on stderr, nothing on
    /// stdout, a non-zero exit.
    fn one_error_line(&self) -> &str {
        assert!(
            !self.ok() && self.code.is_some(),
            "expected a failure, got {:?}\nstdout: {}\nstderr: {}",
            self.code,
            self.stdout,
            self.stderr
        );
        assert!(self.stdout.is_empty(), "nothing on stdout: {}", self.stdout);
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one error line, got:\n{}", self.stderr);
        assert!(lines[0].starts_with("sluice: "), "{}", lines[0]);
        lines[0]
    }
}

/// Runs `sluice ARGS`, killing it (and failing) after `limit`.
fn sluice_within(args: &[&str], limit: Duration) -> Run {
    let mut child = Command::new(SLUICE)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sluice starts");
    // Read the pipes on threads so a chatty child never blocks on them.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut out, &mut s).map(|_| s)
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut err, &mut s).map(|_| s)
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for sluice") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "sluice {} did not exit within {limit:?}; killed",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code(),
        stdout: out.join().unwrap().expect("stdout"),
        stderr: err.join().unwrap().expect("stderr"),
    }
}

fn sluice(args: &[&str]) -> Run {
    sluice_within(args, RUN_LIMIT)
}

/// A fresh, empty directory for one test's files.
fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("run_cli-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// The packets of the test capture: UDP frames of many sizes, and one
/// 10-byte runt at `RUNT_AT` that macswap drops.
fn capture_packets() -> Vec<Vec<u8>> {
    let mut pkts: Vec<Vec<u8>> = (0..200)
        .map(|i| {
            let mut p = udp_template(60 + (i * 37) % 1455);
            p[42..46].copy_from_slice(&(i as u32).to_be_bytes()); // a tag in the payload
            p
        })
        .collect();
    pkts.insert(RUNT_AT, vec![0xee; 10]);
    pkts
}
const RUNT_AT: usize = 57;

/// Writes `pkts` as a classic pcap file.
fn write_capture(path: &Path, pkts: &[Vec<u8>]) {
    let mut w = Writer::create(path, WriterOptions::default()).unwrap();
    for (i, p) in pkts.iter().enumerate() {
        w.write_packet(1_700_000_000_000_000_000 + i as u64 * 1000, p)
            .unwrap();
    }
    w.flush().unwrap();
}

/// What macswap makes of `p`.
fn swapped(p: &[u8]) -> Vec<u8> {
    let mut q = p.to_vec();
    q[0..6].copy_from_slice(&p[6..12]);
    q[6..12].copy_from_slice(&p[0..6]);
    q
}

fn u(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("field {field:?} is not a count in {v}"))
}

/// Checks one port entry of the JSON: every documented field is there with
/// the right type, and every received packet got one verdict:
/// rx = xdp_drop + tx verdicts + redirected + passed + aborted.
fn check_port(p: &Value) {
    for f in [
        "rx_packets",
        "tx_packets",
        "rx_bytes",
        "tx_bytes",
        "passed",
        "redirected",
        "aborted",
    ] {
        u(p, f);
    }
    assert!(p["name"].is_string(), "name: {p}");
    let dropped = p["dropped"]
        .as_object()
        .expect("dropped is an object of reasons");
    assert!(dropped.values().all(Value::is_u64), "dropped: {p}");
    assert!(
        dropped.contains_key("xdp_drop"),
        "dropped names xdp_drop: {p}"
    );
    assert_eq!(
        u(p, "rx_packets"),
        u(&p["dropped"], "xdp_drop")
            + u(p, "tx_verdicts")
            + u(p, "redirected")
            + u(p, "passed")
            + u(p, "aborted"),
        "rx = drop + tx + redirect + pass + aborted: {p}"
    );
}

fn dropped_total(p: &Value) -> u64 {
    p["dropped"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(Value::as_u64)
        .sum()
}

// ---------------------------------------------------------------------------

/// The issue's own example: a finite null port and an endless one, macswap
/// on both, two seconds, `-j`.
#[test]
fn json_output_has_the_documented_fields_and_counts_add_up() {
    let run = sluice(&[
        "run",
        "--port",
        "null:limit=100000",
        "--port",
        "null",
        "--prog",
        MACSWAP,
        "--duration",
        "2",
        "-j",
    ]);
    let j = run.json();
    let secs = j["duration_secs"].as_f64().expect("duration_secs");
    let ports = j["ports"].as_array().expect("ports[]");
    for p in ports {
        println!(
            "json: {}: rx {} tx {} ({} / {} bytes) dropped {} passed {} redirected {} aborted {} \
             in {secs:.2} s",
            p["name"],
            p["rx_packets"],
            p["tx_packets"],
            p["rx_bytes"],
            p["tx_bytes"],
            p["dropped"],
            p["passed"],
            p["redirected"],
            p["aborted"]
        );
        check_port(p);
    }
    assert!((2.0..30.0).contains(&secs), "ran about 2 s: {secs}");
    assert_eq!(ports.len(), 2);
    assert_eq!(ports[0]["name"], "null0");
    assert_eq!(ports[1]["name"], "null1");
    // Port 0 makes exactly its limit; macswap sends every packet back out.
    let p0 = &ports[0];
    assert_eq!(u(p0, "rx_packets"), 100_000);
    assert_eq!(u(p0, "rx_bytes"), 100_000 * 64);
    assert_eq!(u(p0, "tx_verdicts"), 100_000);
    assert_eq!(u(p0, "tx_packets"), 100_000);
    assert_eq!(u(p0, "tx_bytes"), 100_000 * 64);
    // Port 1 never ends; whatever it made was sent back.
    let p1 = &ports[1];
    assert!(u(p1, "rx_packets") > 100_000, "the endless port ran: {p1}");
    assert_eq!(u(p1, "tx_packets"), u(p1, "rx_packets"));
    assert_eq!(u(p1, "tx_bytes"), 64 * u(p1, "tx_packets"));
    for p in ports {
        assert_eq!(dropped_total(p), 0, "nothing dropped: {p}");
        assert_eq!(
            (u(p, "passed"), u(p, "redirected"), u(p, "aborted")),
            (0, 0, 0)
        );
    }
}

/// A capture in, macswap, a capture out: the output holds every packet but
/// the runt, in order, addresses swapped, nothing else changed.
#[test]
fn pcap_in_pcap_out_gives_the_expected_packets() {
    let dir = scratch("pcap");
    let (a, b) = (dir.join("a.pcap"), dir.join("b.pcap"));
    let pkts = capture_packets();
    write_capture(&a, &pkts);
    let spec = format!("pcap:in={},out={}", s(&a), s(&b));
    let run = sluice(&[
        "run",
        "--port",
        &spec,
        "--prog",
        MACSWAP,
        "--duration",
        "1",
        "-j",
    ]);
    let j = run.json();
    let p = &j["ports"][0];
    check_port(p);
    let out = Reader::open(&b).expect("b.pcap is a capture");
    let got: Vec<&[u8]> = out.packets().map(|p| p.data).collect();
    println!(
        "pcap: {} packets in, {} out; rx {} tx {} dropped {}",
        pkts.len(),
        got.len(),
        p["rx_packets"],
        p["tx_packets"],
        p["dropped"]
    );
    let want: Vec<Vec<u8>> = pkts
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != RUNT_AT)
        .map(|(_, p)| swapped(p))
        .collect();
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, &&w[..], "packet {i} of the output");
    }
    assert_eq!(u(p, "rx_packets"), pkts.len() as u64);
    assert_eq!(u(p, "tx_packets"), want.len() as u64);
    assert_eq!(
        u(p, "tx_bytes"),
        want.iter().map(|p| p.len() as u64).sum::<u64>()
    );
    assert_eq!(u(&p["dropped"], "xdp_drop"), 1, "the runt");
    assert_eq!(dropped_total(p), 1);
}

/// Without `--duration`, a run whose ports are all finite ends by itself
/// once they are drained (`--duration`'s documentation: "default: until
/// Ctrl-C, or until every finite port is drained").
#[test]
fn a_run_of_finite_ports_ends_when_they_are_drained() {
    let dir = scratch("drained");
    let (a, b) = (dir.join("a.pcap"), dir.join("b.pcap"));
    let pkts = capture_packets();
    write_capture(&a, &pkts);
    let spec = format!("pcap:in={},out={}", s(&a), s(&b));
    let run = sluice_within(
        &["run", "--port", &spec, "--prog", MACSWAP, "-j"],
        Duration::from_secs(10),
    );
    let j = run.json();
    assert_eq!(u(&j["ports"][0], "tx_packets"), pkts.len() as u64 - 1);
}

/// The TOML form: two ports, a default program, cores, burst, engine and
/// duration, as the flags would give them.
#[test]
fn a_config_file_runs_like_the_flags() {
    let dir = scratch("config");
    let (a, b) = (dir.join("a.pcap"), dir.join("b.pcap"));
    let pkts = capture_packets();
    write_capture(&a, &pkts);
    let core = sluice_dataplane::allowed_cores()
        .last()
        .copied()
        .unwrap_or(0);
    let config = dir.join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "# sluice run --config\n\
             cores = \"{core}\"\n\
             engine = \"interp\"\n\
             duration = 1\n\
             burst = 16\n\
             program = \"{MACSWAP}\"\n\
             \n\
             [[port]]\n\
             spec = \"null:limit=5000,size=128\"\n\
             \n\
             [[port]]\n\
             spec = \"pcap:in={},out={}\"\n\
             program = \"{MACSWAP}:xdp\"\n",
            s(&a),
            s(&b)
        ),
    )
    .unwrap();
    let run = sluice(&["run", "--config", s(&config), "-j"]);
    let j = run.json();
    let ports = j["ports"].as_array().unwrap();
    for p in ports {
        check_port(p);
        println!(
            "config: {}: rx {} tx {} dropped {} batches {}",
            p["name"], p["rx_packets"], p["tx_packets"], p["dropped"], p["batches"]
        );
    }
    assert_eq!(ports.len(), 2);
    assert_eq!(u(&ports[0], "rx_packets"), 5000);
    assert_eq!(u(&ports[0], "rx_bytes"), 5000 * 128);
    assert_eq!(u(&ports[0], "tx_packets"), 5000);
    assert!(
        u(&ports[0], "batches") >= 5000 / 16,
        "bursts of at most 16: {}",
        ports[0]
    );
    assert_eq!(u(&ports[1], "rx_packets"), pkts.len() as u64);
    assert_eq!(u(&ports[1], "tx_packets"), pkts.len() as u64 - 1);
    assert_eq!(Reader::open(&b).unwrap().len(), pkts.len() - 1);
    assert!(ports.iter().all(|p| u(p, "ingress_version") == 1));
}

/// Writes a config file and runs it; returns the one error line.
fn bad_config(test: &str, text: &str) -> String {
    let dir = scratch(test);
    let config = dir.join("bad.toml");
    std::fs::write(&config, text).unwrap();
    let run = sluice(&["run", "--config", s(&config)]);
    let line = run.one_error_line().to_string();
    println!("{test}: {line}");
    assert!(line.contains(s(&config)), "names the file: {line}");
    line
}

/// A misspelt key at the start of line 5 is reported at line 5, by name.
#[test]
fn a_bad_config_names_the_line_of_an_unknown_field() {
    let line = bad_config(
        "unknown-field",
        "duration = 1\n\
         \n\
         [[port]]\n\
         spec = \"null\"\n\
         prgram = \"x.o\"\n",
    );
    assert!(line.contains("prgram"), "names the field: {line}");
    assert!(line.contains("line 5"), "names line 5: {line}");
}

/// A value of the wrong type is reported with its line and its field.
#[test]
fn a_bad_config_names_the_field_of_a_bad_value() {
    let line = bad_config("bad-value", "duration = 1\nburst = \"many\"\n");
    assert!(line.contains("line 2"), "names line 2: {line}");
    assert!(line.contains("burst"), "names the field: {line}");
}

/// Values that parse as TOML but mean nothing to Sluice are named too.
#[test]
fn a_bad_config_names_a_bad_port_spec_cores_or_engine() {
    let line = bad_config(
        "bad-spec",
        "[[port]]\nspec = \"null\"\n\n[[port]]\nspec = \"null:size=abc\"\n",
    );
    assert!(line.contains("port[1].spec"), "{line}");
    assert!(line.contains("size: invalid number \"abc\""), "{line}");
    let line = bad_config("bad-cores", "cores = \"3-1\"\n[[port]]\nspec = \"null\"\n");
    assert!(
        line.contains("cores") && line.contains("backwards"),
        "{line}"
    );
    let line = bad_config(
        "bad-engine",
        "engine = \"turbo\"\n[[port]]\nspec = \"null\"\n",
    );
    assert!(line.contains("engine") && line.contains("turbo"), "{line}");
}

/// Bad `--port` specs, a missing object, a missing section, a bad
/// `--attach`: one clear line each, non-zero exit, nothing on stdout.
#[test]
fn bad_ports_and_programs_get_one_clear_error_line() {
    let cases: [(&[&str], &[&str]); 6] = [
        (
            &["run", "--port", "null:size=abc", "--duration", "1"],
            &["port spec \"null:size=abc\"", "size", "\"abc\""],
        ),
        (
            &["run", "--port", "bogus:x=1", "--duration", "1"],
            &["port spec \"bogus:x=1\"", "unknown driver \"bogus\""],
        ),
        (
            &["run", "--port", "pcap:", "--duration", "1"],
            &["port spec \"pcap:\""],
        ),
        (
            &[
                "run",
                "--port",
                "null",
                "--prog",
                "/nonexistent/x.o",
                "--duration",
                "1",
            ],
            &["/nonexistent/x.o", "No such file"],
        ),
        (
            &[
                "run",
                "--port",
                "null",
                "--prog",
                &format!("{MACSWAP}:nosuch"),
                "--duration",
                "1",
            ],
            &["macswap.o", "\"nosuch\""],
        ),
        (
            &[
                "run",
                "--port",
                "null",
                "--attach",
                &format!("5={MACSWAP}"),
                "--duration",
                "1",
            ],
            &["--attach", "no port \"5\""],
        ),
    ];
    for (args, needles) in cases {
        let run = sluice(args);
        let line = run.one_error_line();
        println!(
            "errors: sluice {} -> {line} (exit {:?})",
            args.join(" "),
            run.code
        );
        for n in needles {
            assert!(line.contains(n), "{line:?} should mention {n:?}");
        }
    }
    // With -j the error is JSON on stdout, and the exit still fails.
    let run = sluice(&["run", "--port", "null:size=abc", "-j"]);
    assert!(!run.ok());
    let j: Value = serde_json::from_str(run.stdout.trim()).expect("JSON error object");
    assert!(
        j["error"]
            .as_str()
            .unwrap()
            .contains("size: invalid number"),
        "{j}"
    );
}
