//! The admin API as `sluice` subcommands use it: one request to the address a config names,
//! with the token it names or the one the running Sluice wrote to `data_dir/api.token`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use crate::config::{ApiListen, Config};

/// How long a subcommand waits for the API.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a subcommand could not ask the API.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("api.address is \"off\" in this config: there is no API to ask")]
    Off,
    #[error("cannot read the API token {}: {source}", path.display())]
    Token {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("admin API at {address}: {source}")]
    Io {
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("admin API at {address}: not an HTTP answer")]
    NotHttp { address: std::net::SocketAddr },
}

/// Sends `method path` to the API of the Sluice running `config`; returns status and body.
pub fn request(config: &Config, method: &str, path: &str) -> Result<(u16, String), ClientError> {
    let ApiListen::On(address) = config.api.address else {
        return Err(ClientError::Off);
    };
    let token = read_for_client(config.api.token.as_deref(), &config.data_dir)?;
    let io = |source| ClientError::Io { address, source };
    let mut stream = TcpStream::connect_timeout(&address, CLIENT_TIMEOUT).map_err(io)?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).map_err(io)?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: sluice\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(io)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).map_err(io)?;
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or(ClientError::NotHttp { address })?;
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.to_string()))
}

/// The token a `sluice` subcommand presents: the configured one, else the file's.
pub fn read_for_client(configured: Option<&str>, data_dir: &Path) -> Result<String, ClientError> {
    if let Some(t) = configured {
        return Ok(t.to_string());
    }
    let path = data_dir.join(super::token::TOKEN_FILE);
    std::fs::read_to_string(&path)
        .map(|t| t.trim().to_string())
        .map_err(|source| ClientError::Token { path, source })
}
