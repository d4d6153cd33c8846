//! What a config posted to the API (`POST /config`) may do: never more than the config file
//! Sluice was started with allowed. The file is the operator's (root's) word; a token leaked
//! to a local user must not turn into writing files as root or listening on the network.
//!
//! - File sink paths lie under `api.allowed_paths` (default: data_dir and the directories of
//!   the file sinks in the startup file). Paths are resolved through the symlinks that exist
//!   and may not contain `..`.
//! - New source addresses are on loopback, or on an IP a source of the startup file listens
//!   on.
//! - TCP sink destinations are ones the startup file names (its tcp sinks and
//!   `api.allowed_destinations`).
//! - `[api]` itself cannot change through the API.
//!
//! A refusal names the key and the rule; the API answers it with 403.

use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};

use crate::config::Config;
use crate::sinks::Reach;

/// The bounds taken from the startup config.
#[derive(Debug, Clone, Default)]
pub struct ApiPolicy {
    allowed_paths: Vec<PathBuf>,
    listen_ips: Vec<IpAddr>,
    destinations: Vec<String>,
}

impl ApiPolicy {
    pub fn from_startup(config: &Config) -> Self {
        let configured = &config.api.allowed_paths;
        let mut paths: Vec<PathBuf> = if configured.is_empty() {
            let mut p = vec![config.data_dir.clone()];
            p.extend(
                config
                    .sinks
                    .values()
                    .filter_map(|s| match s.settings().reach() {
                        Reach::File(path) => Some(parent_dir(path)),
                        Reach::Destination(_) | Reach::Console => None,
                    }),
            );
            p
        } else {
            configured.clone()
        };
        paths = paths.iter().filter_map(|p| resolve(p).ok()).collect();
        let mut destinations = config.api.allowed_destinations.clone();
        destinations.extend(
            config
                .sinks
                .values()
                .filter_map(|s| match s.settings().reach() {
                    Reach::Destination(address) => Some(address.to_string()),
                    Reach::File(_) | Reach::Console => None,
                }),
        );
        ApiPolicy {
            allowed_paths: paths,
            listen_ips: config
                .sources
                .values()
                .filter_map(|s| Some(s.address()?.ip()))
                .collect(),
            destinations,
        }
    }

    /// Checks what `posted` adds or changes against `running`; the reason when refused.
    pub fn check(&self, running: &Config, posted: &Config) -> Result<(), PolicyViolation> {
        if running.api != posted.api {
            return Err(PolicyViolation::ApiChanged);
        }
        for (name, source) in &posted.sources {
            if running.sources.get(name) == Some(source) {
                continue;
            }
            let Some(address) = source.address() else {
                // Reading local files or stdin is the host's business, not a remote caller's.
                return Err(PolicyViolation::LocalSource {
                    name: name.clone(),
                    kind: source.type_name(),
                });
            };
            let ip = address.ip();
            if !ip.is_loopback() && !self.listen_ips.contains(&ip) {
                return Err(PolicyViolation::ListenAddress {
                    name: name.clone(),
                    ip,
                });
            }
        }
        for (name, sink) in &posted.sinks {
            if running.sinks.get(name) == Some(sink) {
                continue;
            }
            match sink.settings().reach() {
                Reach::File(path) => {
                    self.check_path(path).map_err(|why| PolicyViolation::Path {
                        name: name.clone(),
                        path: path.to_path_buf(),
                        why,
                    })?
                }
                Reach::Destination(address) if !self.destinations.iter().any(|d| d == address) => {
                    return Err(PolicyViolation::Destination {
                        name: name.clone(),
                        address: address.to_string(),
                    })
                }
                // Sluice's own streams: nothing outside the process is reached.
                Reach::Destination(_) | Reach::Console => {}
            }
        }
        Ok(())
    }

    fn check_path(&self, path: &Path) -> Result<(), PathRefusal> {
        let resolved = resolve(path)?;
        if self.allowed_paths.iter().any(|a| resolved.starts_with(a)) {
            return Ok(());
        }
        let allowed: Vec<String> = self
            .allowed_paths
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        Err(PathRefusal::Outside {
            allowed: allowed.join(", "),
        })
    }
}

/// Why a posted config was refused (403).
#[derive(Debug, thiserror::Error)]
pub enum PolicyViolation {
    #[error("api: the [api] table cannot change through the API (edit the file and send SIGHUP)")]
    ApiChanged,
    #[error("sources.{name}: a {kind} source reads this host's files or input: add or change it in the config file and send SIGHUP")]
    LocalSource { name: String, kind: &'static str },
    #[error("sources.{name}.address: {ip} is not loopback and no source of the startup config listens on it")]
    ListenAddress { name: String, ip: std::net::IpAddr },
    #[error("sinks.{name}.path: {}: {why}", path.display())]
    Path {
        name: String,
        path: PathBuf,
        #[source]
        why: PathRefusal,
    },
    #[error("sinks.{name}.address: {address} is not a destination of the startup config (list it in api.allowed_destinations)")]
    Destination { name: String, address: String },
}

/// Why a file sink's path may not be set through the API.
#[derive(Debug, thiserror::Error)]
pub enum PathRefusal {
    #[error("'..' is not allowed in paths set through the API")]
    ParentDir,
    #[error("cannot resolve relative paths: {0}")]
    CurrentDir(#[source] std::io::Error),
    #[error("cannot resolve the path")]
    Unresolvable,
    #[error("not under api.allowed_paths ({allowed})")]
    Outside { allowed: String },
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `path` made absolute, without `..`, with its longest existing ancestor's symlinks resolved.
fn resolve(path: &Path) -> Result<PathBuf, PathRefusal> {
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(PathRefusal::ParentDir);
    }
    let absolute = std::env::current_dir()
        .map_err(PathRefusal::CurrentDir)?
        .join(path);
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        match std::fs::canonicalize(existing) {
            Ok(real) => {
                let mut out = real;
                out.extend(rest.iter().rev());
                return Ok(out);
            }
            Err(_) => match (existing.parent(), existing.file_name()) {
                (Some(parent), Some(name)) => {
                    rest.push(name.to_os_string());
                    existing = parent;
                }
                _ => return Err(PathRefusal::Unresolvable),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, sinks: &str) -> Config {
        let text = format!(
            "data_dir = \"{}/data\"\n[sources.a]\ntype = \"syslog\"\nmode = \"tcp\"\naddress = \"127.0.0.1:1\"\n{sinks}",
            dir.display()
        );
        Config::parse(&text, "t").unwrap()
    }

    fn file_sink(path: &Path) -> String {
        format!(
            "[sinks.f]\ntype = \"file\"\npath = \"{}\"\n",
            path.display()
        )
    }

    #[test]
    fn posted_paths_stay_under_the_allowed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        let running = config(dir.path(), &file_sink(&out.join("a.log")));
        let policy = ApiPolicy::from_startup(&running);
        let ok = config(dir.path(), &file_sink(&out.join("sub/b.log")));
        assert!(policy.check(&running, &ok).is_ok());
        let data = config(dir.path(), &file_sink(&dir.path().join("data/x.log")));
        assert!(policy.check(&running, &data).is_ok());
        for bad in ["/etc/cron.d/evil", "/etc/passwd"] {
            let e = policy
                .check(&running, &config(dir.path(), &file_sink(Path::new(bad))))
                .unwrap_err();
            assert!(
                matches!(
                    e,
                    PolicyViolation::Path {
                        why: PathRefusal::Outside { .. },
                        ..
                    }
                ),
                "{e}"
            );
            assert!(e.to_string().contains("allowed_paths"), "{e}");
        }
        let dotdot = config(dir.path(), &file_sink(&out.join("../../etc/x")));
        assert!(matches!(
            policy.check(&running, &dotdot),
            Err(PolicyViolation::Path {
                why: PathRefusal::ParentDir,
                ..
            })
        ));
        // A symlink inside an allowed directory does not lead out of it.
        std::os::unix::fs::symlink("/etc", out.join("etc")).unwrap();
        let linked = config(dir.path(), &file_sink(&out.join("etc/cron.d/x")));
        assert!(policy.check(&running, &linked).is_err());
    }

    #[test]
    fn posted_listeners_and_destinations_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let running = config(dir.path(), &file_sink(&dir.path().join("a.log")));
        let policy = ApiPolicy::from_startup(&running);
        let wide = Config::parse(
            &running.source_text.replace("127.0.0.1:1", "0.0.0.0:1"),
            "t",
        )
        .unwrap();
        assert!(matches!(
            policy.check(&running, &wide),
            Err(PolicyViolation::ListenAddress { .. })
        ));
        let exfil = Config::parse(
            &format!(
                "{}[sinks.t]\ntype = \"tcp\"\naddress = \"127.0.0.1:4444\"\n",
                running.source_text
            ),
            "t",
        )
        .unwrap();
        assert!(matches!(
            policy.check(&running, &exfil),
            Err(PolicyViolation::Destination { .. })
        ));
        let token = Config::parse(
            &running.source_text.replace(
                "[sources.a]",
                "[api]\ntoken = \"0123456789abcdef0\"\n[sources.a]",
            ),
            "t",
        )
        .unwrap();
        assert!(matches!(
            policy.check(&running, &token),
            Err(PolicyViolation::ApiChanged)
        ));
    }
}
