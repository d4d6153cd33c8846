//! The TCP forward sink: to another Sluice or any syslog receiver.
//!
//! A batch is confirmed once written to the socket (RELP, with real acknowledgements, comes
//! later). After any error the connection is dropped and the whole batch resent on a new one,
//! so the receiver may see a batch twice, never a gap.

use std::io::{self, Write};
use std::net::{TcpStream, ToSocketAddrs};

use crate::config::TcpSink;

use super::Sink;

pub struct TcpOutput {
    config: TcpSink,
    conn: Option<TcpStream>,
}

impl TcpOutput {
    pub fn new(config: &TcpSink) -> Self {
        TcpOutput {
            config: config.clone(),
            conn: None,
        }
    }

    fn connect(&mut self) -> io::Result<&mut TcpStream> {
        if self.conn.is_none() {
            let address = &self.config.address;
            let mut last_error =
                io::Error::new(io::ErrorKind::NotFound, format!("{address}: no addresses"));
            for addr in address.to_socket_addrs()? {
                match TcpStream::connect_timeout(&addr, self.config.connect_timeout) {
                    Ok(stream) => {
                        stream.set_nodelay(true)?;
                        stream.set_write_timeout(Some(self.config.write_timeout))?;
                        tracing::info!(%addr, "tcp sink connected");
                        self.conn = Some(stream);
                        break;
                    }
                    Err(e) => last_error = io::Error::new(e.kind(), format!("connect {addr}: {e}")),
                }
            }
            if self.conn.is_none() {
                return Err(last_error);
            }
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }
}

impl Sink for TcpOutput {
    fn deliver(&mut self, batch: &[u8]) -> io::Result<()> {
        let address = self.config.address.clone();
        let conn = self.connect()?;
        conn.write_all(batch)
            .and_then(|()| conn.flush())
            .map_err(|e| io::Error::new(e.kind(), format!("write to {address}: {e}")))
    }

    fn reset(&mut self) {
        self.conn = None;
    }
}
