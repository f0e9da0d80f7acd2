//! `stockd`'s settings: command-line flags and a TOML file with the same names, merged over the
//! defaults (flag > file > default) into one [`ServerConfig`].

use crate::protocol::Limits;
use crate::runtime::{EngineConfig, Fsync};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The default QUIC (UDP) address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7400";
/// The default metrics (HTTP) address.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:7401";
/// The default data directory.
pub const DEFAULT_DATA_DIR: &str = "./data";

/// When an accepted movement is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FsyncMode {
    /// After its log record is on disk (fdatasync): survives power loss.
    Always,
    /// UNSAFE: after the write to the OS. An OS crash or power loss loses acknowledged movements.
    Never,
}

/// How the server's async runtime runs. Measured on the 2-core development machine with client
/// and server on it: the two are within noise of each other (single-movement requests 200k to
/// 300k/s durable either way; batches of 100, 1.1M to 1.4M movements/s), and current-thread uses
/// less CPU, leaving the other core to the engine's threads: it is the default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuntimeKind {
    /// One thread for all network I/O (the engine has its own threads).
    CurrentThread,
    /// One worker thread per core.
    MultiThread,
}

/// Settings that may come from flags or from the TOML file. Every field is optional: what is
/// given on the command line wins over the file, and the file over the default.
#[derive(Clone, Debug, Default, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// UDP address to listen on for QUIC. [default: 127.0.0.1:7400]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Data directory: log, checkpoints, TLS certificate, tokens, admin token. [default: ./data]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Shards (threads applying movements), 1 to 16; fixed when the data directory is created.
    /// [default: the number of cores]
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,
    /// When an accepted movement is acknowledged: `always` = after it is on disk, `never` =
    /// UNSAFE, before (benchmarks only). [default: always]
    #[arg(long, value_name = "WHEN")]
    pub fsync: Option<FsyncMode>,
    /// Log kept for the change feed even after a checkpoint covers it, in bytes: a subscriber can
    /// resume that far back; older requests get `feed_truncated`. [default: 1073741824]
    #[arg(long, value_name = "BYTES")]
    pub log_retention_bytes: Option<u64>,
    /// HTTP address of the Prometheus metrics page (`/metrics`), or `off`. [default: 127.0.0.1:7401]
    #[arg(long, value_name = "ADDR|off")]
    pub metrics_listen: Option<String>,
    /// PEM certificate chain to present instead of the self-signed one in the data directory
    /// (with --tls-key).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Network runtime: `current-thread` or `multi-thread`. [default: current-thread]
    #[arg(long, value_name = "KIND")]
    pub runtime: Option<RuntimeKind>,
    /// Largest request frame a client may send, in bytes. [default: 1048576]
    #[arg(long, value_name = "BYTES")]
    pub frame_bytes_max: Option<u32>,
    /// Most movements in one request. [default: 4096]
    #[arg(long, value_name = "N")]
    pub batch_movements_max: Option<u32>,
    /// Most requests of one connection in process at once. [default: 4096]
    #[arg(long, value_name = "N")]
    pub requests_in_flight_max: Option<u32>,
    /// Most streams open at once on one connection. [default: 16]
    #[arg(long, value_name = "N")]
    pub streams_max: Option<u32>,
    /// Most client connections at once; more are refused. [default: 1024]
    #[arg(long, value_name = "N")]
    pub connections_max: Option<u32>,
    /// A connection silent for this long is closed, in milliseconds. [default: 30000]
    #[arg(long, value_name = "MS")]
    pub idle_timeout_ms: Option<u64>,
    /// Time a client has to send a whole frame once it started it, in milliseconds; a client
    /// that trickles bytes is cut off. [default: 10000]
    #[arg(long, value_name = "MS")]
    pub request_timeout_ms: Option<u64>,
    /// Change-feed events buffered for one subscriber before it is cut off as too slow.
    /// [default: 100000]
    #[arg(long, value_name = "N")]
    pub feed_buffer_events_max: Option<u32>,
}

macro_rules! or_fields {
    ($a:ident, $b:ident, $($f:ident),*) => { Settings { $($f: $a.$f.or($b.$f)),* } };
}

impl Settings {
    /// These settings, with the gaps filled from `other`.
    pub fn or(self, other: Settings) -> Settings {
        let (a, b) = (self, other);
        or_fields!(
            a,
            b,
            listen,
            data_dir,
            shards,
            fsync,
            log_retention_bytes,
            metrics_listen,
            tls_cert,
            tls_key,
            runtime,
            frame_bytes_max,
            batch_movements_max,
            requests_in_flight_max,
            streams_max,
            connections_max,
            idle_timeout_ms,
            request_timeout_ms,
            feed_buffer_events_max
        )
    }

    /// Reads a TOML settings file.
    pub fn from_file(path: &Path) -> Result<Settings, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the config file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))
    }
}

/// Everything a server needs to start.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The engine's settings; its `data_dir` is the server's data directory.
    pub engine: EngineConfig,
    pub metrics_listen: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub limits: Limits,
    pub connections_max: u32,
    pub runtime: RuntimeKind,
}

impl ServerConfig {
    /// Defaults for a data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> ServerConfig {
        ServerConfig {
            listen: DEFAULT_LISTEN.parse().expect("a valid default"),
            engine: EngineConfig::new(data_dir),
            metrics_listen: Some(DEFAULT_METRICS_LISTEN.parse().expect("a valid default")),
            tls_cert: None,
            tls_key: None,
            limits: Limits::default(),
            connections_max: 1024,
            runtime: RuntimeKind::CurrentThread,
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.engine.data_dir
    }

    /// The configuration the settings describe.
    pub fn from_settings(s: Settings) -> Result<ServerConfig, String> {
        let mut c = ServerConfig::new(s.data_dir.unwrap_or_else(|| DEFAULT_DATA_DIR.into()));
        if let Some(v) = s.listen {
            c.listen = v;
        }
        if let Some(v) = s.shards {
            c.engine.shards = v;
        }
        if let Some(v) = s.fsync {
            c.engine.fsync = match v {
                FsyncMode::Always => Fsync::Always,
                FsyncMode::Never => Fsync::Never,
            };
        }
        if let Some(v) = s.log_retention_bytes {
            c.engine.log_retention_bytes = v;
        }
        if let Some(v) = s.metrics_listen {
            c.metrics_listen = match v.as_str() {
                "off" | "" => None,
                addr => {
                    Some(addr.parse().map_err(|_| format!("metrics_listen: {addr:?} is neither ADDR:PORT nor off"))?)
                }
            };
        }
        c.tls_cert = s.tls_cert;
        c.tls_key = s.tls_key;
        if let Some(v) = s.runtime {
            c.runtime = v;
        }
        let l = &mut c.limits;
        let set = |dst: &mut u32, v: Option<u32>| {
            if let Some(v) = v {
                *dst = v;
            }
        };
        set(&mut l.frame_bytes_max, s.frame_bytes_max);
        set(&mut l.batch_movements_max, s.batch_movements_max);
        set(&mut l.requests_in_flight_max, s.requests_in_flight_max);
        set(&mut l.streams_max, s.streams_max);
        set(&mut l.feed_buffer_events_max, s.feed_buffer_events_max);
        set(&mut c.connections_max, s.connections_max);
        if let Some(v) = s.idle_timeout_ms {
            l.idle_timeout_ms = v;
        }
        if let Some(v) = s.request_timeout_ms {
            l.request_timeout_ms = v;
        }
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<(), String> {
        self.limits.validate()?;
        if self.connections_max == 0 {
            return Err("connections_max must be at least 1".into());
        }
        if !(1..=crate::core::SHARDS_MAX).contains(&self.engine.shards) {
            return Err(format!("shards must be 1 to {}, not {}", crate::core::SHARDS_MAX, self.engine.shards));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("tls_cert and tls_key go together: give both or neither".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let file: Settings = toml::from_str(
            "listen = \"127.0.0.1:9000\"\ndata_dir = \"/tmp/x\"\nfsync = \"never\"\nstreams_max = 8\nmetrics_listen = \"off\"\n",
        )
        .unwrap();
        let flags = Settings { listen: Some("127.0.0.1:9100".parse().unwrap()), ..Settings::default() };
        let c = ServerConfig::from_settings(flags.or(file)).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9100".parse().unwrap());
        assert_eq!(c.data_dir(), Path::new("/tmp/x"));
        assert_eq!(c.engine.fsync, Fsync::Never);
        assert_eq!(c.limits.streams_max, 8);
        assert_eq!(c.limits.batch_movements_max, Limits::default().batch_movements_max);
        assert_eq!(c.metrics_listen, None);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_their_name() {
        let e = toml::from_str::<Settings>("listen_addr = \"x\"").unwrap_err().to_string();
        assert!(e.contains("listen_addr"), "{e}");
        let e = ServerConfig::from_settings(Settings { streams_max: Some(0), ..Settings::default() }).unwrap_err();
        assert!(e.contains("streams_max"), "{e}");
    }
}
