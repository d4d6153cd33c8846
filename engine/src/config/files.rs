//! Where a config comes from (files, a directory, or the embedded default), and writing a
//! posted config back to its file atomically.

use std::path::{Path, PathBuf};

use super::{Config, ConfigError};

/// Where a config came from: files (`--config`, repeatable) and a directory (`--config-dir`,
/// every `*.toml` in it, in name order). Empty: the embedded default. SIGHUP and `POST
/// /reload` read them again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigFiles {
    pub files: Vec<PathBuf>,
    pub dir: Option<PathBuf>,
}

impl ConfigFiles {
    /// One file given with `--config`.
    pub fn file(path: &Path) -> Self {
        ConfigFiles {
            files: vec![path.to_path_buf()],
            dir: None,
        }
    }

    pub fn is_embedded(&self) -> bool {
        self.files.is_empty() && self.dir.is_none()
    }

    /// The one file the config came from, if it came from exactly one (`POST /config`
    /// writes a posted config back to it).
    pub fn single_file(&self) -> Option<&Path> {
        match (self.files.as_slice(), &self.dir) {
            ([file], None) => Some(file),
            _ => None,
        }
    }

    /// Every file, the directory's in name order after the ones named.
    pub fn paths(&self) -> Result<Vec<PathBuf>, ConfigError> {
        let mut paths = self.files.clone();
        if let Some(dir) = &self.dir {
            let read = |source| ConfigError::Read {
                path: dir.clone(),
                source,
            };
            let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(read)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
                .collect();
            if found.is_empty() {
                return Err(ConfigError::EmptyDir { dir: dir.clone() });
            }
            found.sort();
            paths.extend(found);
        }
        Ok(paths)
    }

    /// Reads, merges and validates the files (the embedded default when there are none).
    pub fn load(&self) -> Result<Config, ConfigError> {
        if self.is_embedded() {
            return Config::embedded_default();
        }
        let mut texts = Vec::new();
        for path in self.paths()? {
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            texts.push((path.display().to_string(), text));
        }
        let mut config = Config::parse_all(&texts)?;
        config.files = self.clone();
        Ok(config)
    }
}

/// Replaces the config file at `path` with `text` atomically ([`crate::atomic_file`]),
/// keeping its permissions. A symlink is followed: its target is replaced.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let target = std::fs::canonicalize(path)?;
    let mode = std::fs::metadata(&target)?.permissions().mode() & 0o7777;
    crate::atomic_file::replace(&target, text.as_bytes(), mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_file_keeps_its_mode_and_replaces_the_old_text() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomically(&path, "new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left");
    }
}
