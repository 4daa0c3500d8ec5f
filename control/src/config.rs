//! The daemon's TOML configuration (`sluice daemon --config FILE`) and
//! `sluice config check FILE`, which names the field and line of every
//! error, not only the first (see `docs/config.md`).
//!
//! ```toml
//! cores = "0-1"
//! engine = "interp"
//! burst = 32
//!
//! [api]
//! socket = "/run/sluice/sluice.sock"
//! http_port = 9100
//! http_token = "s3cret"
//!
//! [log]
//! format = "json"          # or "text"
//! filter = "info,sluice=debug"
//!
//! [host]
//! addresses = ["10.0.0.1/24@0"]
//! gateways = ["10.0.0.254@0"]
//!
//! [[port]]
//! spec = "afxdp:eth0"
//! program = "fw.o:xdp"
//! egress = "stamp.o"
//! ```
//!
//! Checking works on the parsed TOML tree, field by field, so one run
//! reports every unknown key, wrong type and bad value with its line;
//! [`DaemonConfig::load`] refuses a file that has any.

use std::path::{Path, PathBuf};

use serde::Serialize;
use sluice_dataplane::host::HostConfig;
use sluice_dataplane::parse_core_list;
use sluice_drivers::spec::PortSpec;
use toml::Value;

/// The default API socket.
pub const DEFAULT_SOCKET: &str = "/run/sluice/sluice.sock";

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigError {
    /// 1-based line (0 when unknown).
    pub line: usize,
    /// The field, as a path (`port[1].spec`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.field, self.message)
    }
}

/// One `[[port]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortConfig {
    /// The port specification, as `--port` takes it.
    pub spec: String,
    /// Ingress program, `OBJ[:SECTION]`.
    pub program: Option<String>,
    /// Egress program, `OBJ[:SECTION]`.
    pub egress: Option<String>,
}

/// The daemon's whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DaemonConfig {
    /// Worker cores, `0-3,8` style.
    pub cores: Option<String>,
    /// `interp` or `jit`.
    pub engine: Option<String>,
    /// Packets per burst.
    pub burst: Option<usize>,
    /// Default ingress program for every port without one.
    pub program: Option<String>,
    /// Ports, in order.
    pub ports: Vec<PortConfig>,
    /// The Unix socket path.
    pub socket: Option<PathBuf>,
    /// TCP port of the HTTP service on the host stack (0: off).
    pub http_port: Option<u16>,
    /// Bearer token for HTTP requests that change state.
    pub http_token: Option<String>,
    /// `text` or `json`.
    pub log_format: Option<String>,
    /// `RUST_LOG`-style filter.
    pub log_filter: Option<String>,
    /// Host-stack addresses, `ADDR/PREFIX[@PORT]`.
    pub host_addresses: Vec<String>,
    /// Host-stack gateways, `ADDR[@PORT]`.
    pub host_gateways: Vec<String>,
    /// Ports that get an address by DHCP.
    pub host_dhcp: Vec<String>,
}

/// Finds the line of `key` inside table `table` (`None`: the top level;
/// `Some((name, n))`: the `n`-th `[name]`/`[[name]]` header).
fn line_of(text: &str, table: Option<(&str, usize)>, key: Option<&str>) -> usize {
    let mut in_table = table.is_none();
    let mut seen = 0usize;
    let mut header_line = 0usize;
    for (i, raw) in text.lines().enumerate() {
        let l = raw.trim();
        if l.starts_with('[') {
            let name = l.trim_matches(|c| c == '[' || c == ']').trim();
            in_table = false;
            if let Some((t, n)) = table {
                if name == t {
                    if seen == n {
                        in_table = true;
                        header_line = i + 1;
                    }
                    seen += 1;
                }
            }
            continue;
        }
        if !in_table {
            continue;
        }
        if let Some(k) = key {
            let lhs = l.split('=').next().unwrap_or("").trim().trim_matches('"');
            if l.contains('=') && lhs == k {
                return i + 1;
            }
        }
    }
    header_line
}

/// Collects errors while walking the tree.
struct Checker<'a> {
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn err(&mut self, table: Option<(&str, usize)>, key: &str, field: String, msg: String) {
        let line = line_of(self.text, table, Some(key));
        self.errors.push(ConfigError {
            line,
            field,
            message: msg,
        });
    }

    fn string(
        &mut self,
        t: &toml::Table,
        table: Option<(&str, usize)>,
        prefix: &str,
        key: &str,
    ) -> Option<String> {
        match t.get(key)? {
            Value::String(s) => Some(s.clone()),
            other => {
                self.err(
                    table,
                    key,
                    format!("{prefix}{key}"),
                    format!("expected a string, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn int(
        &mut self,
        t: &toml::Table,
        table: Option<(&str, usize)>,
        prefix: &str,
        key: &str,
        max: i64,
    ) -> Option<i64> {
        match t.get(key)? {
            Value::Integer(n) if (0..=max).contains(n) => Some(*n),
            Value::Integer(n) => {
                self.err(
                    table,
                    key,
                    format!("{prefix}{key}"),
                    format!("{n} is out of range (0..={max})"),
                );
                None
            }
            other => {
                self.err(
                    table,
                    key,
                    format!("{prefix}{key}"),
                    format!("expected an integer, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn strings(
        &mut self,
        t: &toml::Table,
        table: Option<(&str, usize)>,
        prefix: &str,
        key: &str,
    ) -> Vec<String> {
        match t.get(key) {
            None => Vec::new(),
            Some(Value::Array(a)) if a.iter().all(Value::is_str) => a
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            Some(_) => {
                self.err(
                    table,
                    key,
                    format!("{prefix}{key}"),
                    "expected an array of strings".into(),
                );
                Vec::new()
            }
        }
    }

    fn unknown(
        &mut self,
        t: &toml::Table,
        table: Option<(&str, usize)>,
        prefix: &str,
        known: &[&str],
    ) {
        for k in t.keys() {
            if !known.contains(&k.as_str()) {
                self.err(
                    table,
                    k,
                    format!("{prefix}{k}"),
                    format!("unknown field (expected one of: {})", known.join(", ")),
                );
            }
        }
    }

    fn program(
        &mut self,
        v: &Option<String>,
        table: Option<(&str, usize)>,
        prefix: &str,
        key: &str,
    ) {
        if let Some(p) = v {
            let path = crate::daemon::obj_section(p).0;
            if !path.exists() {
                self.err(
                    table,
                    key,
                    format!("{prefix}{key}"),
                    format!("object {} does not exist", path.display()),
                );
            }
        }
    }
}

impl DaemonConfig {
    /// Checks `text` and returns the configuration, or every error found.
    ///
    /// # Errors
    /// Every problem, each with its line and field.
    pub fn parse(text: &str) -> Result<DaemonConfig, Vec<ConfigError>> {
        let root: toml::Table = match text.parse::<toml::Table>() {
            Ok(t) => t,
            Err(e) => {
                let line = e
                    .span()
                    .map_or(0, |s| text[..s.start].lines().count().max(1));
                return Err(vec![ConfigError {
                    line,
                    field: "(syntax)".into(),
                    message: e.message().to_string(),
                }]);
            }
        };
        let mut c = Checker {
            text,
            errors: Vec::new(),
        };
        let mut cfg = DaemonConfig::default();
        c.unknown(
            &root,
            None,
            "",
            &[
                "cores", "engine", "burst", "program", "api", "log", "host", "port",
            ],
        );
        cfg.cores = c.string(&root, None, "", "cores");
        if let Some(cores) = &cfg.cores {
            if let Err(e) = parse_core_list(cores) {
                c.err(None, "cores", "cores".into(), e);
            }
        }
        cfg.engine = c.string(&root, None, "", "engine");
        match cfg.engine.as_deref() {
            None | Some("interp") => {}
            Some("jit") if sluice_bpf::Engine::best() == sluice_bpf::Engine::Jit => {}
            Some("jit") => c.err(
                None,
                "engine",
                "engine".into(),
                "this build has no JIT (x86-64 with the `jit` feature only)".into(),
            ),
            Some(o) => c.err(
                None,
                "engine",
                "engine".into(),
                format!("{o:?}: expected interp or jit"),
            ),
        }
        cfg.burst = c.int(&root, None, "", "burst", 256).map(|n| n as usize);
        cfg.program = c.string(&root, None, "", "program");
        let p = cfg.program.clone();
        c.program(&p, None, "", "program");
        match root.get("api") {
            None => {}
            Some(Value::Table(t)) => {
                let tb = Some(("api", 0));
                c.unknown(t, tb, "api.", &["socket", "http_port", "http_token"]);
                cfg.socket = c.string(t, tb, "api.", "socket").map(PathBuf::from);
                cfg.http_port = c.int(t, tb, "api.", "http_port", 65535).map(|n| n as u16);
                cfg.http_token = c.string(t, tb, "api.", "http_token");
            }
            Some(_) => c.err(None, "api", "api".into(), "expected a table".into()),
        }
        match root.get("log") {
            None => {}
            Some(Value::Table(t)) => {
                let tb = Some(("log", 0));
                c.unknown(t, tb, "log.", &["format", "filter"]);
                cfg.log_format = c.string(t, tb, "log.", "format");
                if let Some(f) = &cfg.log_format {
                    if f != "text" && f != "json" {
                        c.err(
                            tb,
                            "format",
                            "log.format".into(),
                            format!("{f:?}: expected text or json"),
                        );
                    }
                }
                cfg.log_filter = c.string(t, tb, "log.", "filter");
                if let Some(f) = &cfg.log_filter {
                    if let Err(e) = tracing_subscriber::EnvFilter::try_new(f) {
                        c.err(tb, "filter", "log.filter".into(), e.to_string());
                    }
                }
            }
            Some(_) => c.err(None, "log", "log".into(), "expected a table".into()),
        }
        match root.get("host") {
            None => {}
            Some(Value::Table(t)) => {
                let tb = Some(("host", 0));
                c.unknown(t, tb, "host.", &["addresses", "gateways", "dhcp"]);
                cfg.host_addresses = c.strings(t, tb, "host.", "addresses");
                cfg.host_gateways = c.strings(t, tb, "host.", "gateways");
                cfg.host_dhcp = c.strings(t, tb, "host.", "dhcp");
                for (key, list) in [
                    ("addresses", &cfg.host_addresses),
                    ("gateways", &cfg.host_gateways),
                ] {
                    for (i, a) in list.iter().enumerate() {
                        let r = if key == "addresses" {
                            HostConfig::from_args(&[a.as_str()], &[], &[]).map(|_| ())
                        } else {
                            HostConfig::from_args(&[], &[a.as_str()], &[]).map(|_| ())
                        };
                        if let Err(e) = r {
                            c.err(tb, key, format!("host.{key}[{i}]"), e.to_string());
                        }
                    }
                }
            }
            Some(_) => c.err(None, "host", "host".into(), "expected a table".into()),
        }
        match root.get("port") {
            None => {}
            Some(Value::Array(ports)) => {
                for (i, p) in ports.iter().enumerate() {
                    let tb = Some(("port", i));
                    let prefix = format!("port[{i}].");
                    let Value::Table(t) = p else {
                        c.err(
                            None,
                            "port",
                            format!("port[{i}]"),
                            "expected a table".into(),
                        );
                        continue;
                    };
                    c.unknown(t, tb, &prefix, &["spec", "program", "egress"]);
                    let spec = c.string(t, tb, &prefix, "spec");
                    match &spec {
                        None if !t.contains_key("spec") => {
                            let line = line_of(text, tb, None);
                            c.errors.push(ConfigError {
                                line,
                                field: format!("port[{i}].spec"),
                                message: "missing (every port needs a spec)".into(),
                            });
                        }
                        None => {}
                        Some(s) => {
                            if let Err(e) = PortSpec::parse(s) {
                                c.err(tb, "spec", format!("port[{i}].spec"), e.to_string());
                            }
                        }
                    }
                    let program = c.string(t, tb, &prefix, "program");
                    c.program(&program, tb, &prefix, "program");
                    let egress = c.string(t, tb, &prefix, "egress");
                    c.program(&egress, tb, &prefix, "egress");
                    cfg.ports.push(PortConfig {
                        spec: spec.unwrap_or_default(),
                        program,
                        egress,
                    });
                }
            }
            Some(_) => c.err(
                None,
                "port",
                "port".into(),
                "expected [[port]] tables".into(),
            ),
        }
        if cfg.ports.is_empty() && c.errors.is_empty() {
            c.errors.push(ConfigError {
                line: 0,
                field: "port".into(),
                message: "no ports: add a [[port]] table with a spec".into(),
            });
        }
        if cfg.http_token.is_some() && cfg.host_addresses.is_empty() && cfg.host_dhcp.is_empty() {
            c.err(
                Some(("api", 0)),
                "http_token",
                "api.http_token".into(),
                "the HTTP API needs a host stack: set host.addresses or host.dhcp".into(),
            );
        }
        c.errors.sort_by_key(|e| e.line);
        if c.errors.is_empty() {
            Ok(cfg)
        } else {
            Err(c.errors)
        }
    }

    /// Reads and checks a file.
    ///
    /// # Errors
    /// Every problem, one per line of the message, each naming the file,
    /// line and field.
    pub fn load(path: &Path) -> anyhow::Result<DaemonConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        DaemonConfig::parse(&text).map_err(|errs| {
            anyhow::anyhow!(
                "{}",
                errs.iter()
                    .map(|e| format!("{}: {e}", path.display()))
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })
    }
}

impl DaemonConfig {
    /// The fields that differ between `self` (running) and `new` and that
    /// only a restart applies: everything but the programs and the log
    /// filter.
    pub fn restart_fields(&self, new: &DaemonConfig) -> Vec<String> {
        let mut out = Vec::new();
        let mut diff = |name: &str, same: bool| {
            if !same {
                out.push(name.to_string());
            }
        };
        diff("cores", self.cores == new.cores);
        diff("engine", self.engine == new.engine);
        diff("burst", self.burst == new.burst);
        diff("api.socket", self.socket == new.socket);
        diff("api.http_port", self.http_port == new.http_port);
        diff("api.http_token", self.http_token == new.http_token);
        diff("log.format", self.log_format == new.log_format);
        diff("host.addresses", self.host_addresses == new.host_addresses);
        diff("host.gateways", self.host_gateways == new.host_gateways);
        diff("host.dhcp", self.host_dhcp == new.host_dhcp);
        if self.ports.len() != new.ports.len() {
            diff("port (the number of ports)", false);
        }
        for (i, (a, b)) in self.ports.iter().zip(&new.ports).enumerate() {
            diff(&format!("port[{i}].spec"), a.spec == b.spec);
        }
        out
    }
}

/// `sluice config check FILE [-j]`: prints every error (or `ok`); false
/// when there is any.
pub fn check(path: &Path, json: bool) -> anyhow::Result<bool> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    let r = DaemonConfig::parse(&text);
    let errors = r.as_ref().err().cloned().unwrap_or_default();
    if json {
        println!(
            "{}",
            serde_json::json!({ "v": crate::api::VERSION, "ok": errors.is_empty(), "file": path.display().to_string(), "errors": errors })
        );
    } else if errors.is_empty() {
        println!("{}: ok", path.display());
    } else {
        for e in &errors {
            println!("{}: {e}", path.display());
        }
    }
    Ok(errors.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_with_line_and_field() {
        let text = "cores = \"3-1\"\nengine = \"fast\"\nbogus = 1\n\n[api]\nhttp_port = 70000\n\n[[port]]\nspec = \"null\"\n\n[[port]]\nspec = \"nope:x\"\ncolour = \"red\"\n";
        let errs = DaemonConfig::parse(text).unwrap_err();
        let got: Vec<(usize, &str)> = errs.iter().map(|e| (e.line, e.field.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (1, "cores"),
                (2, "engine"),
                (3, "bogus"),
                (6, "api.http_port"),
                (12, "port[1].spec"),
                (13, "port[1].colour"),
            ],
            "{errs:#?}"
        );
    }

    #[test]
    fn good_file() {
        let cfg = DaemonConfig::parse(
            "[api]\nsocket = \"/tmp/s.sock\"\n[log]\nformat = \"json\"\n[[port]]\nspec = \"ring:a\"\n",
        )
        .unwrap();
        assert_eq!(cfg.ports.len(), 1);
        assert_eq!(cfg.socket.as_deref(), Some(Path::new("/tmp/s.sock")));
        assert_eq!(cfg.log_format.as_deref(), Some("json"));
    }
}
