//! `sluice config`: the effective configuration (every file merged, every default filled in,
//! the environment interpolated) as TOML that reads back to the same config. `api.token` is
//! never shown.

use toml::{Table, Value};

use super::{ApiListen, Compression, Config, Shards, SinkConfig, SourceConfig};
use storage::{FsyncPolicy, FullPolicy, MinFree, RecoveryMode};

use crate::units::render::{bytes, duration, text};

/// The effective config as TOML.
pub fn render(config: &Config) -> String {
    let mut top = Table::new();
    top.insert(
        "data_dir".into(),
        text(&config.data_dir.display().to_string()),
    );
    top.insert(
        "shards".into(),
        match config.shards {
            Shards::Auto => text("auto"),
            Shards::Count(n) => Value::Integer(n as i64),
        },
    );
    top.insert("shutdown_timeout".into(), duration(config.shutdown_timeout));
    top.insert("status_interval".into(), duration(config.status_interval));
    top.insert(
        "max_connection_memory".into(),
        bytes(config.max_connection_memory),
    );
    top.insert("wal".into(), Value::Table(wal(config)));
    top.insert("api".into(), Value::Table(api(config)));
    let sources = config
        .sources
        .iter()
        .map(|(n, s)| (n.clone(), Value::Table(source(s))));
    top.insert("sources".into(), Value::Table(sources.collect()));
    if !config.transforms.is_empty() {
        let transforms = config
            .transforms
            .iter()
            .map(|(n, t)| (n.clone(), Value::Table(transform(t))));
        top.insert("transforms".into(), Value::Table(transforms.collect()));
    }
    let sinks = config
        .sinks
        .iter()
        .map(|(n, s)| (n.clone(), Value::Table(sink(s))));
    top.insert("sinks".into(), Value::Table(sinks.collect()));
    let mut out = String::from(
        "# The effective Sluice config (sluice config): files merged, defaults filled in.\n",
    );
    if config.api.token.is_some() {
        out.push_str("# api.token is set (not shown).\n");
    }
    out.push_str(&toml::to_string(&top).unwrap_or_default());
    out
}

fn wal(config: &Config) -> Table {
    let w = &config.wal;
    let mut t = Table::new();
    let fsync = match w.fsync {
        FsyncPolicy::Always => text("always"),
        FsyncPolicy::Never => text("never"),
        FsyncPolicy::Interval(d) => duration(d),
    };
    t.insert("fsync".into(), fsync);
    t.insert("segment_size".into(), bytes(w.segment_size));
    t.insert("buffer_size".into(), bytes(w.buffer_size));
    let recovery = match w.recovery {
        RecoveryMode::TolerateCorruptTail => "tolerate_corrupt_tail",
        RecoveryMode::Strict => "strict",
    };
    t.insert("recovery".into(), text(recovery));
    t.insert("compression".into(), text(compression_name(w.compression)));
    t.insert(
        "compression_level".into(),
        Value::Integer(w.compression_level.into()),
    );
    t.insert("compress_after".into(), duration(w.compress_after));
    if let Some(max) = w.max_disk {
        t.insert("max_disk".into(), bytes(max));
    }
    let min_free = match w.min_free_disk {
        MinFree::Bytes(b) => b.to_string(),
        MinFree::Percent(p) => format!("{p}%"),
    };
    t.insert("min_free_disk".into(), Value::String(min_free));
    let when_full = match w.when_full {
        FullPolicy::Block => "block",
        FullPolicy::DropOldest => "drop_oldest",
    };
    t.insert("when_full".into(), text(when_full));
    t.insert(
        "ready_segments".into(),
        Value::Integer(w.ready_segments as i64),
    );
    t.insert(
        "fast_path_commits".into(),
        Value::Integer(w.fast_path_commits as i64),
    );
    t.insert("fast_path_bytes".into(), bytes(w.fast_path_bytes));
    t.insert(
        "commits_in_flight".into(),
        Value::Integer(w.commits_in_flight as i64),
    );
    t.insert("io".into(), Value::String(w.io.to_string()));
    t.insert(
        "commit_compression".into(),
        text(w.commit_compression.name()),
    );
    t.insert(
        "commit_compression_level".into(),
        Value::Integer(i64::from(w.commit_compression_level)),
    );
    t
}

fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::Zstd => "zstd",
        Compression::None => "none",
    }
}

fn api(config: &Config) -> Table {
    let a = &config.api;
    let mut t = Table::new();
    let address = match a.address {
        ApiListen::Off => "off".to_string(),
        ApiListen::On(address) => address.to_string(),
    };
    t.insert("address".into(), Value::String(address));
    let paths = a
        .allowed_paths
        .iter()
        .map(|p| text(&p.display().to_string()));
    t.insert("allowed_paths".into(), Value::Array(paths.collect()));
    let destinations = a.allowed_destinations.iter().map(|d| text(d));
    t.insert(
        "allowed_destinations".into(),
        Value::Array(destinations.collect()),
    );
    t
}

fn source(source: &SourceConfig) -> Table {
    let mut t = Table::new();
    t.insert("type".into(), text(source.type_name()));
    t.extend(source.settings().render());
    t
}

fn transform(transform: &super::TransformConfig) -> Table {
    let mut t = Table::new();
    t.insert("type".into(), text(transform.type_name()));
    let inputs = transform.settings().inputs().iter().map(|i| text(i));
    t.insert("inputs".into(), Value::Array(inputs.collect()));
    t.extend(transform.settings().render());
    t
}

fn sink(sink: &SinkConfig) -> Table {
    let mut t = Table::new();
    t.insert("type".into(), text(sink.type_name()));
    t.extend(sink.settings().common().render());
    t.extend(sink.settings().render());
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `sluice config` prints reads back to the same config.
    #[test]
    fn the_rendered_config_reads_back_the_same() {
        let original = Config::parse(
            &format!(
                "{}\n[sinks.fwd]\ntype = \"tcp\"\naddress = \"127.0.0.1:6514\"\nframing = \"newline\"\n[api]\naddress = \"127.0.0.1:9514\"\ntoken = \"a-token-of-enough-length\"\n",
                super::super::DEFAULT_CONFIG.replace("[api]\naddress = \"127.0.0.1:9514\"\n", "")
            ),
            "t",
        )
        .unwrap();
        let rendered = render(&original);
        assert!(!rendered.contains("a-token-of-enough-length"), "{rendered}");
        let mut again = Config::parse(&rendered, "rendered").unwrap();
        again.api.token = original.api.token.clone();
        assert_eq!(again.sources, original.sources);
        assert_eq!(again.sinks, original.sinks);
        assert_eq!(again.transforms, original.transforms);
        assert_eq!(again.wal, original.wal);
        assert_eq!(again.api, original.api);
        assert_eq!(render(&again), rendered);
    }

    /// Every output type reads back from what `sluice config` prints; secrets are redacted.
    #[test]
    fn every_sink_type_reads_back() {
        let sinks = r#"
[sinks.collector]
type = "http"
uri = "https://collector.example/ingest"
encoding = "json_array"
compression = "zstd"
auth = { strategy = "basic", user = "u", password = "p4ss" }
headers = { X-Scope = "fleet" }
tls = { ca_file = "/etc/ca.pem", verify = true }
batch.max_events = 500
concurrency = 3
[sinks.search]
type = "elasticsearch"
endpoint = "http://127.0.0.1:9200"
index = "logs-{{hostname}}-%Y.%m.%d"
action = "index"
pipeline = "p"
dlq_max_size = "10MiB"
[sinks.chain]
type = "relp"
address = "127.0.0.1:2514"
window = 32
tls = { ca_file = "/etc/ca.pem", crt_file = "/etc/c.pem", key_file = "/etc/k.pem" }
[sinks.archive]
type = "file"
path = "/var/log/x.ndjson"
compression = "gzip"
batch = { timeout = "20ms" }
"#;
        let original = Config::parse(
            &format!(
                "{}{sinks}",
                super::super::DEFAULT_CONFIG
                    .replace("[sinks.", "[sinks_old.")
                    .split("[sinks_old.")
                    .next()
                    .unwrap_or("")
            ),
            "t",
        )
        .unwrap();
        let rendered = render(&original);
        assert!(!rendered.contains("p4ss"), "{rendered}");
        let again = Config::parse(&rendered, "rendered").unwrap();
        let differing: Vec<_> = original
            .sinks
            .iter()
            .filter(|(name, s)| again.sinks.get(*name) != Some(*s))
            .map(|(name, _)| name.clone())
            .collect();
        assert_eq!(
            differing,
            vec!["collector".to_string()],
            "only the redacted password differs"
        );
        assert_eq!(render(&again), rendered);
    }

    /// Every source type and mode reads back from what `sluice config` prints; API keys are
    /// redacted.
    #[test]
    fn every_source_type_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let pem = |name: &str| dir.path().join(name).display().to_string();
        let made = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-subj", "/CN=t", "-days", "1", "-keyout"])
            .args([pem("k.pem"), "-out".into(), pem("c.pem")])
            .output()
            .unwrap();
        assert!(made.status.success(), "{made:?}");
        let sources = format!(
            r#"
[sources.secure]
type = "syslog"
mode = "tls"
address = "127.0.0.1:6514"
tls = {{ cert_file = "{c}", key_file = "{k}", ca_file = "{c}", client_auth = "optional", handshake_timeout = "3s" }}
[sources.relp]
type = "syslog"
mode = "relp"
address = "127.0.0.1:2514"
[sources.apps]
type = "http"
address = "127.0.0.1:8088"
max_body_size = "1MiB"
api_keys = [{{ name = "billing", key = "0123456789abcdef0", rate_limit = 100 }}]
tls = {{ cert_file = "{c}", key_file = "{k}" }}
"#,
            c = pem("c.pem"),
            k = pem("k.pem")
        );
        let base = super::super::DEFAULT_CONFIG
            .replace("[sources.", "[sources_old.")
            .replace("[sinks.", "[sources_old.");
        let head = base.split("[sources_old.").next().unwrap_or("");
        let original = Config::parse(
            &format!("{head}{sources}[sinks.out]\ntype = \"console\"\n"),
            "t",
        )
        .unwrap();
        let rendered = render(&original);
        assert!(!rendered.contains("0123456789abcdef0"), "{rendered}");
        let again = Config::parse(&rendered, "rendered").unwrap();
        let differing: Vec<_> = original
            .sources
            .iter()
            .filter(|(name, s)| again.sources.get(*name) != Some(*s))
            .map(|(name, _)| name.clone())
            .collect();
        assert_eq!(
            differing,
            vec!["apps".to_string()],
            "only the redacted key differs"
        );
        assert_eq!(render(&again), rendered);
    }
}
