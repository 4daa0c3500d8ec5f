//! The control API's schema: one versioned JSON request/response shape,
//! served the same way on the daemon's Unix socket and on `POST /api` of
//! the host stack's HTTP service (see `docs/api.md`).
//!
//! A request is one JSON object naming the schema version and a command:
//!
//! ```json
//! {"v":1,"cmd":"prog.load","path":"/srv/fw.o","section":"xdp","attach":"0:ingress"}
//! ```
//!
//! and its answer is one JSON object, `{"v":1,"ok":true,...}` with the
//! command's fields, or `{"v":1,"ok":false,"error":"..."}`. On the Unix
//! socket each request and each response is one line (newline-delimited
//! JSON); a connection may carry any number of requests.
//!
//! Binary data (map keys and values) travels as lowercase hex strings, in
//! the map's own byte order, exactly the bytes `bpf(2)` would copy.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// The schema version this build speaks.
pub const VERSION: u32 = 1;

/// A request: the version and the command.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// Schema version; must be [`VERSION`].
    pub v: u32,
    /// The command and its arguments.
    #[serde(flatten)]
    pub cmd: Command,
}

impl Request {
    /// A request of this build's version.
    pub fn new(cmd: Command) -> Request {
        Request { v: VERSION, cmd }
    }
}

/// Every command, tagged by `cmd`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", deny_unknown_fields)]
pub enum Command {
    /// Loads an object (verified on load); attaches one of its programs
    /// when `attach` names a hook.
    #[serde(rename = "prog.load")]
    ProgLoad {
        /// Object path, as the daemon sees it.
        path: String,
        /// Program name or section (default: the object's first program).
        #[serde(default)]
        section: Option<String>,
        /// `PORT[:ingress|egress]`.
        #[serde(default)]
        attach: Option<String>,
    },
    /// Replaces the program on a hook with one from a new object, only if
    /// the hook still runs program `expect_id` (when given).
    #[serde(rename = "prog.replace")]
    ProgReplace {
        /// `PORT[:ingress|egress]`.
        port: String,
        /// Object path.
        path: String,
        /// Program name or section.
        #[serde(default)]
        section: Option<String>,
        /// Program id the hook must run for the swap to happen.
        #[serde(default)]
        expect_id: Option<u32>,
    },
    /// Empties a hook (packets then pass, as with no program).
    #[serde(rename = "prog.detach")]
    ProgDetach {
        /// `PORT[:ingress|egress]`.
        port: String,
    },
    /// Forgets a loaded program that is not attached anywhere.
    #[serde(rename = "prog.unload")]
    ProgUnload {
        /// Program id.
        id: u32,
    },
    /// Lists loaded programs.
    #[serde(rename = "prog.show")]
    ProgShow {},
    /// A program's instructions, disassembled.
    #[serde(rename = "prog.dump")]
    ProgDump {
        /// Program id.
        id: u32,
        /// `xlated` (the program as it runs in the interpreter) or `jited`.
        #[serde(default = "xlated")]
        kind: String,
    },
    /// Lists maps.
    #[serde(rename = "map.show")]
    MapShow {},
    /// Every element of a map.
    #[serde(rename = "map.dump")]
    MapDump {
        /// Map name, or `id:N`.
        map: String,
    },
    /// One element.
    #[serde(rename = "map.lookup")]
    MapLookup {
        /// Map name, or `id:N`.
        map: String,
        /// Key bytes, hex.
        key: String,
    },
    /// Sets an element.
    #[serde(rename = "map.update")]
    MapUpdate {
        /// Map name, or `id:N`.
        map: String,
        /// Key bytes, hex.
        key: String,
        /// Value bytes, hex (all CPUs' copies for per-CPU maps).
        value: String,
        /// `any` (default), `noexist` or `exist`.
        #[serde(default)]
        flags: Option<String>,
    },
    /// Removes an element.
    #[serde(rename = "map.delete")]
    MapDelete {
        /// Map name, or `id:N`.
        map: String,
        /// Key bytes, hex.
        key: String,
    },
    /// Keeps a map by name across program replacement.
    #[serde(rename = "map.pin")]
    MapPin {
        /// Map name, or `id:N`.
        map: String,
    },
    /// Stops keeping a map.
    #[serde(rename = "map.unpin")]
    MapUnpin {
        /// Pinned name.
        map: String,
    },
    /// Streams the samples programs write into a perf event array, like
    /// `bpftool map event_pipe` (Unix socket only: it holds the connection,
    /// sending one `{"event": ...}` line per sample or loss before the
    /// answer).
    #[serde(rename = "map.event_pipe")]
    MapEventPipe {
        /// Map name, or `id:N`.
        map: String,
        /// Stop after this many samples.
        #[serde(default)]
        count: Option<u64>,
        /// Stop after this many seconds (default: until `count`, or the
        /// client goes away).
        #[serde(default)]
        duration: Option<f64>,
    },
    /// The ports.
    #[serde(rename = "port.list")]
    PortList {},
    /// Every counter, now.
    #[serde(rename = "stats")]
    Stats {},
    /// Captures packets at program exit into a pcapng file (Unix socket
    /// only: it holds the connection until done).
    #[serde(rename = "capture")]
    Capture {
        /// Port number or name.
        port: String,
        /// Verdicts wanted (`drop`, `pass`, `tx`, `redirect`, `aborted`);
        /// all when empty.
        #[serde(default)]
        verdicts: Vec<String>,
        /// Output file, as the daemon sees it.
        path: String,
        /// Stop after this many packets.
        #[serde(default)]
        count: Option<u64>,
        /// Stop after this many seconds (default 10 without a count).
        #[serde(default)]
        duration: Option<f64>,
        /// Bytes kept per packet.
        #[serde(default)]
        snaplen: Option<usize>,
    },
    /// Re-reads the daemon's configuration file and applies it: the
    /// programs it names are (re)loaded and swapped in, all or nothing;
    /// pinned maps carry over (SIGHUP does the same).
    #[serde(rename = "config.reload")]
    ConfigReload {},
    /// Stops the daemon (removes its socket).
    #[serde(rename = "daemon.stop")]
    DaemonStop {},
}

fn xlated() -> String {
    "xlated".into()
}

impl Command {
    /// Whether the command changes state (needs the token over HTTP).
    pub fn changes_state(&self) -> bool {
        !matches!(
            self,
            Command::ProgShow {}
                | Command::ProgDump { .. }
                | Command::MapShow {}
                | Command::MapDump { .. }
                | Command::MapLookup { .. }
                | Command::MapEventPipe { .. }
                | Command::PortList {}
                | Command::Stats {}
        )
    }
}

/// A successful answer: `{"v":1,"ok":true}` plus `fields` (an object).
pub fn ok(fields: Value) -> Value {
    let mut m = Map::new();
    m.insert("v".into(), json!(VERSION));
    m.insert("ok".into(), json!(true));
    if let Value::Object(f) = fields {
        m.extend(f);
    }
    Value::Object(m)
}

/// A refusal: `{"v":1,"ok":false,"error":msg}`.
pub fn error(msg: impl std::fmt::Display) -> Value {
    json!({ "v": VERSION, "ok": false, "error": msg.to_string() })
}

/// Parses one request line; a malformed one gives the refusal to send.
///
/// # Errors
/// The refusal (bad JSON, unknown command, wrong version) as a response.
pub fn parse_request(text: &str) -> Result<Request, Value> {
    let raw: Value =
        serde_json::from_str(text).map_err(|e| error(format!("request is not JSON: {e}")))?;
    match raw.get("v").and_then(Value::as_u64) {
        Some(v) if v == u64::from(VERSION) => {}
        Some(v) => {
            return Err(error(format!(
                "schema version {v} is not supported (this daemon speaks v{VERSION})"
            )))
        }
        None => return Err(error("request has no \"v\" (schema version)")),
    }
    serde_json::from_value(raw).map_err(|e| error(format!("bad request: {e}")))
}

/// Parses bpftool's byte syntax: `0x0a 0 0 0` (hex with `0x`, else
/// decimal, one byte each) or one contiguous hex string (`0a000000`,
/// optionally `0x`-led).
///
/// # Errors
/// The word that is not a byte.
pub fn parse_bytes(words: &[String]) -> Result<Vec<u8>, String> {
    if let [one] = words {
        let s = one.strip_prefix("0x").unwrap_or(one);
        if s.len() > 2 && s.len() % 2 == 0 && s.bytes().all(|c| c.is_ascii_hexdigit()) {
            return hex::decode(s).map_err(|e| format!("{one:?}: {e}"));
        }
    }
    words
        .iter()
        .map(|w| {
            let r = match w.strip_prefix("0x").or_else(|| w.strip_prefix("0X")) {
                Some(h) => u8::from_str_radix(h, 16),
                None => w.parse::<u8>(),
            };
            r.map_err(|_| format!("{w:?} is not a byte (0x-hex or decimal 0-255)"))
        })
        .collect()
}

/// Bytes as bpftool prints them: `0a 00 00 00`.
pub fn spaced_hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let r = parse_request(r#"{"v":1,"cmd":"prog.detach","port":"0:ingress"}"#).unwrap();
        assert!(matches!(r.cmd, Command::ProgDetach { ref port } if port == "0:ingress"));
        assert!(r.cmd.changes_state());
        let e = parse_request(r#"{"v":2,"cmd":"stats"}"#).unwrap_err();
        assert!(e["error"].as_str().unwrap().contains("version 2"));
        let e = parse_request(r#"{"v":1,"cmd":"nope"}"#).unwrap_err();
        assert_eq!(e["ok"], json!(false));
        let s = serde_json::to_string(&Request::new(Command::Stats {})).unwrap();
        assert_eq!(s, r#"{"v":1,"cmd":"stats"}"#);
    }

    #[test]
    fn bpftool_bytes() {
        let w = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            parse_bytes(&w("0x0a 0 0 255")).unwrap(),
            vec![10, 0, 0, 255]
        );
        assert_eq!(parse_bytes(&w("0a000000")).unwrap(), vec![10, 0, 0, 0]);
        assert_eq!(parse_bytes(&w("0x0a000000")).unwrap(), vec![10, 0, 0, 0]);
        assert_eq!(parse_bytes(&w("10")).unwrap(), vec![10]);
        assert!(parse_bytes(&w("256")).is_err());
        assert_eq!(spaced_hex(&[1, 0xab]), "01 ab");
    }
}
