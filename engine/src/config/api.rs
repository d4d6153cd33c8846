//! `[api]`: the admin HTTP API's address, token and what a posted config may touch.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::Deserialize;

use crate::units::de_from_str;

/// `[api]`: the admin HTTP API (metrics, health, readiness, config).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// `"host:port"` on loopback, or `"off"`.
    #[serde(default = "default_api_listen", deserialize_with = "de_from_str")]
    pub address: ApiListen,
    /// The bearer token for the endpoints that change or reveal the config (and `/metrics`
    /// when set). Unset: a random one is written to `data_dir/api.token` at every start.
    #[serde(default)]
    pub token: Option<String>,
    /// Directories file sinks posted through the API may write under (default: data_dir and
    /// the directories of this file's file sinks).
    #[serde(default)]
    pub allowed_paths: Vec<PathBuf>,
    /// `host:port` destinations TCP sinks posted through the API may send to, besides this
    /// file's TCP sinks.
    #[serde(default)]
    pub allowed_destinations: Vec<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            address: default_api_listen(),
            token: None,
            allowed_paths: Vec::new(),
            allowed_destinations: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiListen {
    Off,
    On(SocketAddr),
}

/// `api.address` that is neither `host:port` nor `off`.
#[derive(Debug, thiserror::Error)]
#[error("expected \"host:port\" or \"off\", got {0:?}")]
pub struct ApiListenError(String);

impl FromStr for ApiListen {
    type Err = ApiListenError;
    fn from_str(s: &str) -> Result<Self, ApiListenError> {
        if s == "off" {
            return Ok(ApiListen::Off);
        }
        s.parse()
            .map(ApiListen::On)
            .map_err(|_| ApiListenError(s.to_string()))
    }
}

fn default_api_listen() -> ApiListen {
    ApiListen::On(SocketAddr::from(([127, 0, 0, 1], 9514)))
}

impl ApiConfig {
    pub(super) fn check(&self) -> Result<(), (String, String)> {
        if self.token.as_deref().is_some_and(|t| t.len() < 16) {
            return Err(("api.token".into(), "must be at least 16 characters".into()));
        }
        match self.address {
            ApiListen::On(address) if !address.ip().is_loopback() => Err((
                "api.address".into(),
                "must be a loopback address: the API speaks plain HTTP (no TLS); put a TLS proxy with authentication in front of it to reach it from elsewhere".into(),
            )),
            _ => Ok(()),
        }
    }
}
