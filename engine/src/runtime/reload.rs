//! Applying a new configuration to a running Sluice (SIGHUP, `POST /config`, `POST /reload`).
//!
//! Semantics:
//! - The new config is validated first; if it is invalid, or changes what only a restart can
//!   change (`data_dir`, `shards`, `[wal]`, `api.address`), it is refused with the reason and
//!   the running config continues untouched.
//! - Sources that did not change keep their listeners and connections. A removed source stops
//!   accepting, and its connections drain what the kernel holds into the WAL, as at shutdown.
//!   A changed source is removed, then added. Added sources bind on shard 0 first (port 0 is
//!   resolved there), then on every other shard.
//! - Sinks that did not change keep running. A removed sink first delivers everything durable
//!   (bounded by `shutdown_timeout`), persists its cursor and stops; it no longer holds WAL
//!   segments back. A changed sink is stopped that way and started again from its cursor (same
//!   name, same cursor: at-least-once). An added sink starts at the WAL's end when the reload is applied
//!   (`start_at = "oldest"`: from the oldest segment on disk).
//! - Events in the WAL are untouched by a reload: nothing durable is lost, and at most the
//!   batch an output was delivering when it was stopped is delivered twice.

use std::collections::BTreeMap;

use crate::config::{Config, SinkConfig, SourceConfig};

/// A change only a restart can apply.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{key} cannot change while running: restart Sluice to apply it")]
pub struct RestartNeeded {
    pub key: &'static str,
}

/// What a reload changes.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub sources_removed: Vec<String>,
    pub sources_added: Vec<(String, SourceConfig)>,
    pub sinks_removed: Vec<String>,
    pub sinks_added: Vec<(String, SinkConfig)>,
    /// Transforms added, removed or changed.
    pub transforms_changed: Vec<String>,
}

/// Compares the running config with a new one: what changes, or why it cannot be applied
/// without a restart.
pub fn plan(old: &Config, new: &Config) -> Result<Plan, RestartNeeded> {
    let restart_only = [
        ("data_dir", old.data_dir != new.data_dir),
        ("shards", old.shard_count() != new.shard_count()),
        ("wal", old.wal != new.wal),
        ("api.address", old.api.address != new.api.address),
        (
            "max_connection_memory",
            old.max_connection_memory != new.max_connection_memory,
        ),
    ];
    if let Some((key, _)) = restart_only.iter().find(|(_, changed)| *changed) {
        return Err(RestartNeeded { key });
    }
    let (sources_removed, sources_added) = diff(&old.sources, &new.sources);
    let (sinks_removed, sinks_added) = diff(&old.sinks, &new.sinks);
    let (mut transforms_changed, added) = diff(&old.transforms, &new.transforms);
    for (name, _) in added {
        if !transforms_changed.contains(&name) {
            transforms_changed.push(name);
        }
    }
    Ok(Plan {
        sources_removed,
        sources_added,
        sinks_removed,
        sinks_added,
        transforms_changed,
    })
}

/// Names to remove (gone or changed) and entries to add (new or changed).
fn diff<T: Clone + PartialEq>(
    old: &BTreeMap<String, T>,
    new: &BTreeMap<String, T>,
) -> (Vec<String>, Vec<(String, T)>) {
    let removed = old
        .iter()
        .filter(|(name, value)| new.get(*name) != Some(value))
        .map(|(name, _)| name.clone())
        .collect();
    let added = new
        .iter()
        .filter(|(name, value)| old.get(*name) != Some(value))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    (removed, added)
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self == &Plan::default()
    }

    /// Whether the shards need new processing (the transform graph or the routing changed).
    /// Events already in the WAL keep what they were processed with.
    pub fn changes_processing(&self) -> bool {
        !self.transforms_changed.is_empty()
            || !self.sources_removed.is_empty()
            || !self.sources_added.is_empty()
            || !self.sinks_removed.is_empty()
            || !self.sinks_added.is_empty()
    }

    /// [`Plan::describe`], plus the settings that changed without a source or sink changing
    /// (so a reload that changes only `api.token` does not say "nothing changed").
    pub fn describe_with(&self, old: &Config, new: &Config) -> String {
        let others: Vec<&str> = [
            ("api.token", old.api.token != new.api.token),
            (
                "shutdown_timeout",
                old.shutdown_timeout != new.shutdown_timeout,
            ),
            (
                "status_interval",
                old.status_interval != new.status_interval,
            ),
        ]
        .iter()
        .filter(|(_, changed)| *changed)
        .map(|(key, _)| *key)
        .collect();
        match (self.is_empty(), others.is_empty()) {
            (_, true) => self.describe(),
            (true, false) => format!("reloaded: {} changed", others.join(", ")),
            (false, false) => format!("{}; {} changed", self.describe(), others.join(", ")),
        }
    }

    /// One line for the log and the API's answer.
    pub fn describe(&self) -> String {
        if self.is_empty() {
            return "reloaded: nothing changed".into();
        }
        let names = |v: &[String]| v.join(",");
        fn added<T>(v: &[(String, T)]) -> String {
            v.iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(",")
        }
        let transforms = if self.transforms_changed.is_empty() {
            String::new()
        } else {
            format!(", transforms changed [{}]", names(&self.transforms_changed))
        };
        format!(
            "reloaded: sources -[{}] +[{}], sinks -[{}] +[{}]{transforms}",
            names(&self.sources_removed),
            added(&self.sources_added),
            names(&self.sinks_removed),
            added(&self.sinks_added),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!(
            "{extra}[sources.a]\ntype = \"syslog\"\nmode = \"tcp\"\naddress = \"127.0.0.1:1\"\n\
             [sinks.b]\ntype = \"file\"\npath = \"x/out.log\"\n"
        );
        Config::parse(&text, "test").unwrap()
    }

    #[test]
    fn unchanged_parts_stay_and_changed_ones_are_replaced() {
        let old = config("");
        assert!(plan(&old, &config("")).unwrap().is_empty());
        let new = config("[sinks.c]\ntype = \"file\"\npath = \"y/out.log\"\n");
        let p = plan(&old, &new).unwrap();
        assert_eq!(p.sinks_removed, Vec::<String>::new());
        assert_eq!(p.sinks_added.len(), 1);
        assert!(p.sources_added.is_empty() && p.sources_removed.is_empty());
        let moved = Config::parse(
            &old.source_text.replace("127.0.0.1:1", "127.0.0.1:2"),
            "test",
        )
        .unwrap();
        let p = plan(&old, &moved).unwrap();
        assert_eq!(p.sources_removed, vec!["a".to_string()]);
        assert_eq!(p.sources_added[0].0, "a");
        assert!(p.describe().contains("sources -[a] +[a]"));
    }

    #[test]
    fn restart_only_keys_are_refused() {
        let old = config("");
        let e = plan(&old, &config("[wal]\nfsync = \"always\"\n")).unwrap_err();
        assert_eq!(e, RestartNeeded { key: "wal" });
        assert!(e.to_string().contains("restart"), "{e}");
        let e = plan(&old, &config("shards = 3\n")).unwrap_err();
        assert_eq!(e, RestartNeeded { key: "shards" });
    }
}
