//! `sluice validate`'s environment checks: what the config needs from this host, checked
//! without starting anything. Each check names what failed and how to fix it.
//!
//! - data_dir: can be created, written and fsync'd (a probe file, removed again), and its file
//!   system is larger than `min_free_disk` plus a segment;
//! - every source address and the API address can be bound now (so a running Sluice holding
//!   them makes validation fail: use `--no-environment` to check a config for a reload);
//! - the locked-memory limit is enough for the io_uring executors.

use std::net::SocketAddr;
use std::path::Path;

use crate::config::{ApiListen, Config, SourceMode};

/// One failed check: what, and the message.
#[derive(Debug, PartialEq, Eq)]
pub struct Problem {
    pub check: String,
    pub message: String,
}

/// Runs every check; an empty list means the host is ready for this config.
pub fn check_environment(config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Err(e) = check_data_dir(&config.data_dir) {
        problems.push(Problem {
            check: format!("data_dir {}", config.data_dir.display()),
            message: e.to_string(),
        });
    } else if let Err(e) = config.check_min_free_disk(&config.data_dir) {
        problems.push(Problem {
            check: "wal.min_free_disk".into(),
            message: e.to_string(),
        });
    }
    for (name, source) in &config.sources {
        let Some(address) = source.address() else {
            continue;
        };
        if let Err(e) = check_bind(source.mode(), address) {
            problems.push(Problem {
                check: format!("sources.{name}.address {address}"),
                message: e.to_string(),
            });
        }
    }
    if let ApiListen::On(address) = config.api.address {
        if let Err(e) = check_bind(SourceMode::Tcp, address) {
            problems.push(Problem {
                check: format!("api.address {address}"),
                message: e.to_string(),
            });
        }
    }
    if let Err(e) = crate::runtime::check_memlock() {
        problems.push(Problem {
            check: "locked memory".into(),
            message: e.to_string(),
        });
    }
    problems
}

/// A host check that failed: what, with the I/O error that says why.
#[derive(Debug, thiserror::Error)]
pub enum HostProblem {
    #[error("cannot create it: {0}")]
    CreateDir(#[source] std::io::Error),
    #[error("not writable by this user: {0}")]
    NotWritable(#[source] std::io::Error),
    #[error("{0}: ports below 1024 need CAP_NET_BIND_SERVICE (the systemd unit grants it)")]
    PrivilegedPort(#[source] std::io::Error),
    #[error("{0}: another process holds it")]
    InUse(#[source] std::io::Error),
    #[error("{0}")]
    Bind(#[source] std::io::Error),
}

fn check_data_dir(dir: &Path) -> Result<(), HostProblem> {
    use std::io::Write;
    std::fs::create_dir_all(dir).map_err(HostProblem::CreateDir)?;
    let probe = dir.join(".sluice-validate-probe");
    let written = std::fs::File::create(&probe)
        .and_then(|mut f| f.write_all(b"probe").and_then(|()| f.sync_all()));
    let _ = std::fs::remove_file(&probe);
    written.map_err(HostProblem::NotWritable)
}

fn check_bind(mode: SourceMode, address: SocketAddr) -> Result<(), HostProblem> {
    mode.try_bind(address).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => HostProblem::PrivilegedPort(e),
        std::io::ErrorKind::AddrInUse => HostProblem::InUse(e),
        _ => HostProblem::Bind(e),
    })
}
