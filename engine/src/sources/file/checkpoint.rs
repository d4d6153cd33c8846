//! Where each file was read to, persisted per shard and source:
//! `data_dir/files/SOURCE/shard-N.json` (replaced atomically).
//!
//! A file is known by its identity (device, inode) and a fingerprint of its first bytes (an
//! inode number reused by another file has another fingerprint). The offset is that of the
//! last line whose records are durable in the WAL: after a restart a file resumes there, so
//! nothing is lost and at most the lines after the last checkpoint are read again.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A file's identity on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

/// The first `len` bytes of a file hash to `crc` (crc32c).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub len: u32,
    pub crc: u32,
}

impl Fingerprint {
    pub fn of(first_bytes: &[u8]) -> Fingerprint {
        Fingerprint {
            len: first_bytes.len() as u32,
            crc: crc32c::crc32c(first_bytes),
        }
    }
}

/// One file's checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub id: FileId,
    pub fingerprint: Fingerprint,
    pub offset: u64,
    /// Where it was last seen (for people reading the file).
    pub path: PathBuf,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    files: Vec<Checkpoint>,
}

pub fn path(dir: &Path, shard: usize) -> PathBuf {
    dir.join(format!("shard-{shard}.json"))
}

/// The checkpoints saved in `file` (none when it does not exist; a damaged file is reported
/// and ignored: the files are then read as new ones).
pub fn load(file: &Path) -> Vec<Checkpoint> {
    match std::fs::read(file) {
        Ok(bytes) => match serde_json::from_slice::<Stored>(&bytes) {
            Ok(stored) => stored.files,
            Err(e) => {
                tracing::error!(path = %file.display(), error = %e,
                    "file checkpoints unreadable: files are read as new ones");
                Vec::new()
            }
        },
        Err(_) => Vec::new(),
    }
}

/// Replaces `file` with `checkpoints` (blocking: run off the shard's executor).
pub fn save(file: &Path, checkpoints: Vec<Checkpoint>) -> std::io::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let bytes =
        serde_json::to_vec(&Stored { files: checkpoints }).map_err(std::io::Error::other)?;
    crate::atomic_file::replace(file, &bytes, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_round_trip_and_damage_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let file = path(&dir.path().join("files/local"), 1);
        assert!(load(&file).is_empty());
        let cp = Checkpoint {
            id: FileId { dev: 2049, ino: 77 },
            fingerprint: Fingerprint::of(b"first line\n"),
            offset: 4096,
            path: "/var/log/app/a.log".into(),
        };
        save(&file, vec![cp.clone()]).unwrap();
        assert_eq!(load(&file), vec![cp]);
        std::fs::write(&file, b"{not json").unwrap();
        assert!(load(&file).is_empty());
    }
}
