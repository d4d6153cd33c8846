//! A RELP sender for the tests that must see the protocol itself (which message got its
//! answer, when the window is full): `open`, windowed `syslog` commands, `close`, answers read
//! on a thread with Sluice's own frame reader.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Condvar, Mutex};

use super::PATIENCE;

#[derive(Default)]
pub struct Answers {
    /// txnr → seq of the messages sent and not answered yet.
    pub in_flight: HashMap<u64, u64>,
    /// Seqs answered `200 OK`, in order.
    pub acked: Vec<u64>,
    /// Any other answer (txnr, text).
    pub other: Vec<(u64, String)>,
    /// The server closed the session (or sent `serverclose`).
    pub closed: bool,
}

pub struct RelpClient {
    stream: TcpStream,
    next_txnr: u64,
    window: usize,
    pub answers: Arc<(Mutex<Answers>, Condvar)>,
}

impl RelpClient {
    /// Connects and opens a session (waits for its answer).
    pub fn open(addr: SocketAddr, window: usize) -> RelpClient {
        let stream = TcpStream::connect(addr).unwrap();
        let answers: Arc<(Mutex<Answers>, Condvar)> = Arc::default();
        let reader = stream.try_clone().unwrap();
        let shared = Arc::clone(&answers);
        std::thread::spawn(move || read_answers(reader, &shared));
        let mut client = RelpClient {
            stream,
            next_txnr: 1,
            window,
            answers,
        };
        client.raw(
            "open",
            b"relp_version=0\nrelp_software=sluice-test\ncommands=syslog",
        );
        client.wait("the open answer", |a| {
            a.other
                .iter()
                .any(|(t, s)| *t == 1 && s.starts_with("200 OK"))
        });
        client
    }

    /// Sends one command (no window check).
    pub fn raw(&mut self, command: &str, data: &[u8]) -> u64 {
        let txnr = self.next_txnr;
        self.next_txnr += 1;
        let mut frame = format!("{txnr} {command} {}", data.len()).into_bytes();
        if !data.is_empty() {
            frame.push(b' ');
            frame.extend_from_slice(data);
        }
        frame.push(b'\n');
        let _ = self.stream.write_all(&frame);
        txnr
    }

    /// Sends message `seq` once the window has room; false when the session is closed.
    pub fn send(&mut self, seq: u64, message: &[u8]) -> bool {
        let (lock, cond) = &*self.answers;
        let mut a = lock.lock().unwrap();
        while a.in_flight.len() >= self.window && !a.closed {
            a = cond.wait(a).unwrap();
        }
        if a.closed {
            return false;
        }
        a.in_flight.insert(self.next_txnr, seq);
        drop(a);
        self.raw("syslog", message);
        true
    }

    /// Waits (bounded by PATIENCE) until `check` holds for the answers.
    pub fn wait(&self, what: &str, check: impl Fn(&Answers) -> bool) {
        let (lock, cond) = &*self.answers;
        let mut a = lock.lock().unwrap();
        let deadline = std::time::Instant::now() + PATIENCE;
        while !check(&a) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(!left.is_zero(), "timed out waiting for {what}");
            a = cond.wait_timeout(a, left).unwrap().0;
        }
    }

    pub fn acked(&self) -> Vec<u64> {
        self.answers.0.lock().unwrap().acked.clone()
    }

    pub fn in_flight(&self) -> usize {
        self.answers.0.lock().unwrap().in_flight.len()
    }
}

fn read_answers(mut stream: TcpStream, shared: &(Mutex<Answers>, Condvar)) {
    let (lock, cond) = shared;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut at = 0;
        while let ingest::relp::Scan::Header(h) = ingest::relp::scan(&buf[at..]) {
            if buf.len() < at + h.frame_len() {
                break;
            }
            let start = at + h.header_len;
            let data = String::from_utf8_lossy(&buf[start..start + h.data_len]).to_string();
            let mut a = lock.lock().unwrap();
            match (h.command, a.in_flight.remove(&h.txnr)) {
                (b"serverclose", _) => a.closed = true,
                (_, Some(seq)) if data == "200 OK" => a.acked.push(seq),
                _ => a.other.push((h.txnr, data)),
            }
            cond.notify_all();
            at += h.frame_len();
        }
        buf.drain(..at);
    }
    lock.lock().unwrap().closed = true;
    cond.notify_all();
}
