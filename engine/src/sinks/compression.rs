//! Compression the sinks offer: request bodies (`http`, `elasticsearch`) and rotated files
//! (`file`).

use std::io::{self, Write};

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// `compression`: none, gzip or zstd.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// The body as sent, and its `Content-Encoding`.
    pub(crate) fn apply<'a>(
        self,
        body: &'a [u8],
        out: &'a mut Vec<u8>,
    ) -> io::Result<(&'a [u8], Option<&'static str>)> {
        match self {
            Compression::None => Ok((body, None)),
            Compression::Gzip => {
                out.clear();
                let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
                gz.write_all(body)?;
                let out = gz.finish()?;
                Ok((&out[..], Some("gzip")))
            }
            Compression::Zstd => {
                *out = zstd::bulk::compress(body, 3)?;
                Ok((&out[..], Some("zstd")))
            }
        }
    }
}

impl Compression {
    /// The file name suffix of a compressed file.
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => ".gz",
            Compression::Zstd => ".zst",
        }
    }
}

/// Compresses the file at `path` into `path` + suffix: written to a temporary name, fsync'd,
/// renamed, the directory fsync'd, and only then the original removed (a crash leaves the
/// original, never a half file under the final name). Returns the compressed file's path.
pub fn compress_file(path: &Path, how: Compression) -> io::Result<PathBuf> {
    if how == Compression::None {
        return Ok(path.to_path_buf());
    }
    let err = |op: &str, p: &Path, e: io::Error| {
        io::Error::new(e.kind(), format!("{op} {}: {e}", p.display()))
    };
    let mut target = path.as_os_str().to_owned();
    target.push(how.suffix());
    let target = PathBuf::from(target);
    let mut temp = target.as_os_str().to_owned();
    temp.push(".tmp");
    let temp = PathBuf::from(temp);
    let mut input = std::fs::File::open(path).map_err(|e| err("open", path, e))?;
    let output = std::fs::File::create(&temp).map_err(|e| err("create", &temp, e))?;
    let output = match how {
        Compression::None => output,
        Compression::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(output, flate2::Compression::default());
            io::copy(&mut input, &mut gz).map_err(|e| err("compress", path, e))?;
            gz.finish().map_err(|e| err("write", &temp, e))?
        }
        Compression::Zstd => {
            let mut z =
                zstd::stream::Encoder::new(output, 3).map_err(|e| err("compress", path, e))?;
            io::copy(&mut input, &mut z).map_err(|e| err("compress", path, e))?;
            z.finish().map_err(|e| err("write", &temp, e))?
        }
    };
    output.sync_all().map_err(|e| err("fsync", &temp, e))?;
    std::fs::rename(&temp, &target).map_err(|e| err("rename", &target, e))?;
    if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| err("fsync directory", dir, e))?;
    }
    std::fs::remove_file(path).map_err(|e| err("remove", path, e))?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_compressed_file_reads_back_and_replaces_the_original() {
        let dir = tempfile::tempdir().unwrap();
        let text = "one event\n".repeat(1000);
        for how in [Compression::Gzip, Compression::Zstd] {
            let path = dir.path().join("events.ndjson.1");
            std::fs::write(&path, &text).unwrap();
            let out = compress_file(&path, how).unwrap();
            assert!(!path.exists());
            let data = std::fs::read(&out).unwrap();
            let mut back = String::new();
            match how {
                Compression::Gzip => {
                    flate2::read::GzDecoder::new(&data[..])
                        .read_to_string(&mut back)
                        .unwrap();
                }
                _ => back = String::from_utf8(zstd::decode_all(&data[..]).unwrap()).unwrap(),
            }
            assert_eq!(back, text);
            assert!(out.to_string_lossy().ends_with(how.suffix()));
        }
    }
}
