//! The admin API's bearer token.
//!
//! Endpoints that change or reveal the configuration always need a token. When `api.token` is
//! not configured, Sluice makes a random one at every start and writes it to
//! `data_dir/api.token` (mode 0600, owned by Sluice's user: only that user and root can read
//! it); `sluice` subcommands that talk to the API read it from there. Tokens are compared in
//! constant time.

use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;

/// The file an unconfigured token is written to, inside data_dir.
pub const TOKEN_FILE: &str = "api.token";

/// The token in force and where it came from.
#[derive(Clone, Debug)]
pub struct ApiAuth {
    token: String,
    /// `api.token` was set in the config (then `/metrics` needs it too).
    pub configured: bool,
}

impl ApiAuth {
    pub fn configured(token: String) -> Self {
        ApiAuth {
            token,
            configured: true,
        }
    }

    pub fn generated(token: String) -> Self {
        ApiAuth {
            token,
            configured: false,
        }
    }

    /// True when `authorization` is `Bearer <the token>`; constant time in the token.
    pub fn admits(&self, authorization: Option<&[u8]>) -> bool {
        let Some(presented) = authorization.and_then(|h| h.strip_prefix(b"Bearer ")) else {
            return false;
        };
        presented.ct_eq(self.token.as_bytes()).into()
    }
}

impl Default for ApiAuth {
    /// Before the runtime set one (or with the API off): a random token nobody was given, or
    /// one no header can carry when the OS has no randomness.
    fn default() -> Self {
        ApiAuth::generated(random_token().unwrap_or_else(|_| "\u{0}unusable".into()))
    }
}

/// 32 random bytes from the OS, hex.
pub fn random_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes a fresh random token to `data_dir/api.token` (0600, replaced atomically) and returns
/// it.
pub fn write_generated(data_dir: &Path) -> Result<String, (PathBuf, std::io::Error)> {
    let path = data_dir.join(TOKEN_FILE);
    let token = random_token().map_err(|e| (path.clone(), e))?;
    crate::atomic_file::replace(&path, format!("{token}\n").as_bytes(), 0o600)
        .map_err(|e| (path.clone(), e))?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generated_tokens_are_private_and_admitted_only_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let token = write_generated(dir.path()).unwrap();
        assert_eq!(token.len(), 64);
        let meta = std::fs::metadata(dir.path().join(TOKEN_FILE)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            super::super::client::read_for_client(None, dir.path()).unwrap(),
            token
        );
        let again = write_generated(dir.path()).unwrap();
        assert_ne!(again, token, "a fresh token at every start");
        let auth = ApiAuth::generated(again.clone());
        assert!(auth.admits(Some(format!("Bearer {again}").as_bytes())));
        assert!(!auth.admits(Some(format!("Bearer {token}").as_bytes())));
        assert!(!auth.admits(Some(format!("Bearer {}", &again[..63]).as_bytes())));
        assert!(!auth.admits(Some(again.as_bytes())));
        assert!(!auth.admits(None));
        assert!(!ApiAuth::default().admits(Some(b"Bearer ")));
    }
}
