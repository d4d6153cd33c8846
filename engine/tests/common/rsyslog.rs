//! rsyslogd as a real peer: the system's rsyslog with Debian's rsyslog-relp and librelp0
//! unpacked privately (`SLUICE_RELP_ROOT`, default `/tmp/sluice-peers/relp`; `.ci/run` does
//! it), on a config the test writes.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use super::{seq_of, signal, wait_for};

/// Where rsyslog-relp and librelp0 are unpacked.
pub fn relp_root() -> PathBuf {
    let root = PathBuf::from(
        std::env::var("SLUICE_RELP_ROOT").unwrap_or_else(|_| "/tmp/sluice-peers/relp".into()),
    );
    assert!(
        root.join("usr/lib/x86_64-linux-gnu/rsyslog/imrelp.so").exists(),
        "rsyslog's imrelp is not unpacked under {} (apt-get download rsyslog-relp librelp0; dpkg-deb -x each there)",
        root.display()
    );
    root
}

/// A module of the unpacked rsyslog-relp (`imrelp`, `omrelp`), for `module(load=…)`.
pub fn relp_module(name: &str) -> String {
    relp_root()
        .join(format!("usr/lib/x86_64-linux-gnu/rsyslog/{name}.so"))
        .display()
        .to_string()
}

/// A running rsyslogd; its `out.log` (if the config writes one) is in `dir`.
pub struct Rsyslog {
    pub child: Child,
    pub dir: PathBuf,
    pub port: u16,
}

impl Rsyslog {
    /// rsyslogd on `body` (after a `global(workDirectory=…)` line); returns once something
    /// listens on 127.0.0.1:`port` (one of its inputs).
    pub fn start_conf(dir: &Path, port: u16, body: &str) -> Rsyslog {
        let root = relp_root();
        let work = dir.join("work");
        std::fs::create_dir_all(&work).unwrap();
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!("global(workDirectory=\"{}\")\n{body}", work.display()),
        )
        .unwrap();
        let child = Command::new("/usr/sbin/rsyslogd")
            .args(["-n", "-f"])
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .env("LD_LIBRARY_PATH", root.join("usr/lib/x86_64-linux-gnu"))
            .spawn()
            .expect("rsyslogd");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_for("rsyslog to listen", || TcpStream::connect(addr).is_ok());
        Rsyslog {
            child,
            dir: dir.to_path_buf(),
            port,
        }
    }

    /// SIGTERM (rsyslog writes out its queue) and wait.
    pub fn stop(mut self) {
        signal(&self.child, libc::SIGTERM);
        let _ = self.child.wait();
    }

    /// How often each `seq=N` is in `out.log`.
    pub fn counts(&self) -> HashMap<u64, usize> {
        let text = std::fs::read_to_string(self.dir.join("out.log")).unwrap_or_default();
        let mut counts = HashMap::new();
        for line in text.lines() {
            if let Some(seq) = seq_of(line.as_bytes()) {
                *counts.entry(seq).or_insert(0) += 1;
            }
        }
        counts
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
