//! Hand-written origins that misbehave on purpose, for byte-level tests.
//!
//! [`ka_server`]: a keep-alive origin that reads request after request on each
//! connection and lets the test write whatever it likes for each one (stray bytes after
//! a response, a trickled head, a lie about the body).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// One request as the keep-alive origin saw it.
pub struct SeenRequest<'a> {
    /// The head, CRLF CRLF included.
    pub head: &'a [u8],
    /// The request's number on its connection, from 0.
    pub on_conn: u64,
    /// The request's number on the whole server, from 0.
    pub on_server: u64,
}

impl SeenRequest<'_> {
    /// The request target (`/path?query`).
    pub fn target(&self) -> String {
        let line = self.head.split(|&c| c == b'\r').next().unwrap_or(b"");
        let s = String::from_utf8_lossy(line);
        s.split(' ').nth(1).unwrap_or("").to_string()
    }

    pub fn method(&self) -> String {
        let s = String::from_utf8_lossy(self.head);
        s.split(' ').next().unwrap_or("").to_string()
    }
}

/// A keep-alive origin: see the module docs. `answer` returns false to close the
/// connection. Request bodies are not read (send GET and HEAD only).
pub struct KaServer {
    pub addr: SocketAddr,
    /// Requests seen, all connections together.
    pub requests: Arc<AtomicU64>,
    /// Connections accepted.
    pub connections: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for KaServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn ka_server<F>(answer: F) -> KaServer
where
    F: Fn(&mut TcpStream, &SeenRequest) -> bool + Send + Sync + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").expect("bind keep-alive server");
    let addr = l.local_addr().expect("local addr");
    let requests = Arc::new(AtomicU64::new(0));
    let connections = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (rq, cn, st) = (requests.clone(), connections.clone(), stop.clone());
    let answer = Arc::new(answer);
    let thread = std::thread::spawn(move || {
        for s in l.incoming() {
            if st.load(Ordering::SeqCst) {
                break;
            }
            let Ok(s) = s else { continue };
            cn.fetch_add(1, Ordering::SeqCst);
            let (rq, a) = (rq.clone(), answer.clone());
            std::thread::spawn(move || serve_conn(s, &rq, &*a));
        }
    });
    KaServer {
        addr,
        requests,
        connections,
        stop,
        thread: Some(thread),
    }
}

fn serve_conn<F>(mut s: TcpStream, requests: &AtomicU64, answer: &F)
where
    F: Fn(&mut TcpStream, &SeenRequest) -> bool,
{
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    s.set_nodelay(true).ok();
    let mut buf = Vec::new();
    let mut b = [0u8; 4096];
    for on_conn in 0.. {
        let end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            match s.read(&mut b) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&b[..n]),
            }
        };
        let head: Vec<u8> = buf.drain(..end).collect();
        let on_server = requests.fetch_add(1, Ordering::SeqCst);
        let seen = SeenRequest {
            head: &head,
            on_conn,
            on_server,
        };
        if !answer(&mut s, &seen) {
            return;
        }
    }
}

/// Writes `bytes` after `delay`, from a thread of its own, on a clone of `s`.
pub fn write_later(s: &TcpStream, delay: Duration, bytes: Vec<u8>) {
    let Ok(mut c) = s.try_clone() else { return };
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        let _ = c.write_all(&bytes);
    });
}

/// A complete `200 OK` response with a Content-Length body.
pub fn ok_response(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
