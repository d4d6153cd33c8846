//! Routing bits: each sink's bit in the route mask of routed WAL records
//! (`ingest::record`, layout 2), kept in `data_dir/sink-bits` so they survive restarts and
//! reloads. A record written for sink `a` must still mean `a` after a reload added `b`.
//!
//! File: one `BIT NAME` line per sink ever assigned (comments with `#`), replaced atomically.
//! A sink keeps its bit for as long as its name is in the file; a new name gets the lowest
//! free bit. Only when all 64 are taken is a bit of a sink no longer configured reused, with a
//! warning: records that sink left in the WAL would then reach the new one.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// The number of routing bits (a record's route mask is a u64).
pub const ROUTING_BITS: usize = 64;
const FILE_NAME: &str = "sink-bits";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkBits {
    bits: BTreeMap<String, u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkBitsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: line {line} is not `BIT NAME`", path.display())]
    Malformed { path: PathBuf, line: usize },
    #[error("more than {ROUTING_BITS} sinks configured at once")]
    TooMany,
}

impl SinkBits {
    /// Reads `data_dir/sink-bits` (none yet: empty).
    pub fn load(data_dir: &Path) -> Result<SinkBits, SinkBitsError> {
        let path = data_dir.join(FILE_NAME);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(SinkBits::default()),
            Err(source) => return Err(SinkBitsError::Read { path, source }),
        };
        let mut bits = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parsed = line.split_once(' ').and_then(|(bit, name)| {
                Some((
                    bit.parse::<u8>()
                        .ok()
                        .filter(|b| usize::from(*b) < ROUTING_BITS)?,
                    name.trim(),
                ))
            });
            match parsed {
                Some((bit, name)) if !name.is_empty() => {
                    bits.insert(name.to_string(), bit);
                }
                _ => return Err(SinkBitsError::Malformed { path, line: n + 1 }),
            }
        }
        Ok(SinkBits { bits })
    }

    /// Gives every name in `sinks` a bit (keeping the ones it has); whether anything changed.
    pub fn assign<'a>(
        &mut self,
        sinks: impl IntoIterator<Item = &'a String>,
    ) -> Result<bool, SinkBitsError> {
        let wanted: Vec<&String> = sinks.into_iter().collect();
        if wanted.len() > ROUTING_BITS {
            return Err(SinkBitsError::TooMany);
        }
        let mut changed = false;
        for name in &wanted {
            if self.bits.contains_key(*name) {
                continue;
            }
            let bit = match self.free_bit() {
                Some(bit) => bit,
                None => self.reclaim(&wanted)?,
            };
            self.bits.insert((*name).clone(), bit);
            changed = true;
        }
        Ok(changed)
    }

    fn free_bit(&self) -> Option<u8> {
        (0..ROUTING_BITS as u8).find(|b| !self.bits.values().any(|v| v == b))
    }

    /// Frees the bit of a sink no longer configured (all 64 taken).
    fn reclaim(&mut self, wanted: &[&String]) -> Result<u8, SinkBitsError> {
        let old = self
            .bits
            .keys()
            .find(|n| !wanted.contains(n))
            .cloned()
            .ok_or(SinkBitsError::TooMany)?;
        let bit = self.bits.remove(&old).ok_or(SinkBitsError::TooMany)?;
        tracing::warn!(sink = %old, bit, "all 64 routing bits taken: reusing the bit of a removed sink (records it left in the WAL reach the sink that gets it)");
        Ok(bit)
    }

    pub fn bit(&self, name: &str) -> Option<u8> {
        self.bits.get(name).copied()
    }

    /// Writes the table (temp, fsync, rename, directory fsync).
    pub fn save(&self, data_dir: &Path) -> Result<(), SinkBitsError> {
        let mut text = String::from(
            "# Routing bit of each sink in routed WAL records (Sluice keeps this file).\n",
        );
        for (name, bit) in &self.bits {
            text.push_str(&format!("{bit} {name}\n"));
        }
        let path = data_dir.join(FILE_NAME);
        crate::atomic_file::replace(&path, text.as_bytes(), 0o644)
            .map_err(|source| SinkBitsError::Write { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_are_kept_across_loads_and_new_names_get_free_ones() {
        let dir = tempfile::tempdir().unwrap();
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut bits = SinkBits::load(dir.path()).unwrap();
        assert!(bits.assign(&names(&["b", "a"])).unwrap());
        bits.save(dir.path()).unwrap();
        let mut again = SinkBits::load(dir.path()).unwrap();
        assert_eq!(again, bits);
        assert!(!again.assign(&names(&["a"])).unwrap());
        assert!(again.assign(&names(&["a", "c"])).unwrap());
        assert_eq!(
            (again.bit("b"), again.bit("a"), again.bit("c")),
            (Some(0), Some(1), Some(2))
        );
        let all: Vec<String> = (0..64).map(|i| format!("s{i}")).collect();
        let mut full = SinkBits::default();
        full.assign(&all).unwrap();
        assert!(
            full.assign(&names(&["new"])).unwrap(),
            "a removed sink's bit is reused"
        );
        let too_many: Vec<String> = (0..65).map(|i| format!("t{i}")).collect();
        assert!(matches!(
            SinkBits::default().assign(&too_many),
            Err(SinkBitsError::TooMany)
        ));
        std::fs::write(dir.path().join(FILE_NAME), "x y\n").unwrap();
        assert!(matches!(
            SinkBits::load(dir.path()),
            Err(SinkBitsError::Malformed { line: 1, .. })
        ));
    }
}
