//! The server's data directory (`--data-dir`, default `noom-data` in the working directory): what
//! must survive a restart. Secrets (the TURN REST secret, the resume-token key), the self-signed
//! certificate, the ACME account and certificates live here, so that a restart changes nothing a
//! browser or another server node can see.
//!
//! The directory is created (mode 0700) the first time something needs it, not at start: a
//! server on loopback with every secret given by flag writes nothing to disk.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};

/// A problem with the data directory or a file in it. Every variant names the path, so the
/// operator knows what to fix.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot create the data directory {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no usable secret (expected at least 16 characters on its first line)")]
    BadSecret { path: PathBuf },
    #[error("the system's random number generator failed")]
    Random,
}

/// A secret shared by everyone who must verify what it signs (other server nodes, a coturn
/// configured with the same `static-auth-secret`). The key material is the UTF-8 bytes of the
/// text, as coturn uses it. Never printed: `Debug` and `Display` show a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// Shortest secret accepted from a flag or a file.
pub const MIN_SECRET_CHARS: usize = 16;

impl Secret {
    /// A secret given by flag or environment; refused when too short to resist guessing.
    pub fn from_text(text: &str) -> Option<Self> {
        let text = text.trim();
        (text.chars().count() >= MIN_SECRET_CHARS).then(|| Self(text.to_string()))
    }

    /// 32 random bytes, written as 64 hex characters.
    pub fn generate() -> Result<Self, DataDirError> {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| DataDirError::Random)?;
        Ok(Self(bytes.iter().map(|b| format!("{b:02x}")).collect()))
    }

    /// The key material.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The text itself, to write to a file an operator copies (never to a log).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The data directory. Cheap to clone; nothing is touched on disk until a file is asked for.
#[derive(Clone, Debug)]
pub struct DataDir {
    path: PathBuf,
}

impl DataDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `name` inside the directory, creating the directory (0700) if needed.
    pub fn file(&self, name: &str) -> Result<PathBuf, DataDirError> {
        self.ensure()?;
        Ok(self.path.join(name))
    }

    /// Creates the directory (and its parents) if missing; only its owner may read it.
    pub fn ensure(&self) -> Result<(), DataDirError> {
        if self.path.is_dir() {
            return Ok(());
        }
        let create = |source| DataDirError::Create {
            path: self.path.clone(),
            source,
        };
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&self.path).map_err(create)
    }

    /// The secret in file `name`: read if it exists, else generated and written (mode 0600) so
    /// the next start, and any node given a copy of the file, uses the same one.
    pub fn secret(&self, name: &str) -> Result<Secret, DataDirError> {
        let path = self.file(name)?;
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let first = text.lines().next().unwrap_or_default();
                Secret::from_text(first).ok_or(DataDirError::BadSecret { path })
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let secret = Secret::generate()?;
                write_private(&path, format!("{}\n", secret.expose()).as_bytes())?;
                Ok(secret)
            }
            Err(source) => Err(DataDirError::Read { path, source }),
        }
    }
}

/// Writes `bytes` to `path` readable by the owner only, atomically (a temporary file renamed
/// over the target), so a crash never leaves half a key behind.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), DataDirError> {
    let write = |source| DataDirError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(write)?;
    file.write_all(bytes).map_err(write)?;
    file.sync_all().map_err(write)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(write)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path().join("nested/noom-data"));
        let first = data.secret("resume-secret").unwrap();
        assert_eq!(first.expose().len(), 64);
        assert_eq!(data.secret("resume-secret").unwrap(), first);
        assert_ne!(data.secret("turn-secret").unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(data.path()), 0o700);
            assert_eq!(mode(&data.path().join("resume-secret")), 0o600);
        }
    }

    #[test]
    fn secrets_never_print() {
        let secret = Secret::from_text("correct horse battery staple").unwrap();
        assert!(!format!("{secret:?} {secret}").contains("horse"));
        assert!(Secret::from_text("short").is_none());
    }

    #[test]
    fn a_damaged_secret_file_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        std::fs::write(dir.path().join("turn-secret"), "x\n").unwrap();
        assert!(matches!(
            data.secret("turn-secret"),
            Err(DataDirError::BadSecret { .. })
        ));
    }
}
