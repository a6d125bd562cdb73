//! bench-origin: a minimal, fast HTTP/1.1 origin for the bench harness.
//!
//! `bench-origin --name s1 --listen 127.0.0.1:PORT [--listen ...] [--threads N]`
//!
//! Each thread runs its own edge-triggered epoll loop over its own SO_REUSEPORT listener, so
//! the origin costs as little CPU per request as we can make it and is not the bottleneck.
//! Keep-alive and pipelining; `Connection: close` honoured. Every response carries `X-Node`.
//!
//! - `GET /` and `GET /login/index.php`: a small Moodle-like page
//! - `GET /mod/quiz/view.php`: a quiz page that references 40 assets (as the tools crate's
//!   origin): `/theme/styles{i}.css` for even i, `/theme/script{i}.js` for odd i
//! - `GET /theme/<anything>`: a small stylesheet (or script, for a name ending in `.js`)
//! - `GET /download?size=N`: N bytes (Content-Length framing)
//! - `POST /upload`: reads the body (Content-Length) and answers its length
//! - anything else: 404

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::OnceLock;

const STATIC_LEN: usize = 1 << 20;
static STATIC_BODY: OnceLock<Vec<u8>> = OnceLock::new();

struct Conn {
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    wpos: usize,
    /// bytes of a large body still to send from STATIC_BODY
    body_left: usize,
    /// bytes of a request body still to discard
    discard: usize,
    /// length of the upload being read, answered when `discard` reaches 0
    upload_len: Option<usize>,
    upload_close: bool,
    close_after: bool,
}

fn small_page(name: &str) -> Vec<u8> {
    let mut s = String::from(
        "<!DOCTYPE html><html><head><title>Moodle</title></head><body><h1>Moodle</h1>\
         <p>A small page from the bench origin, standing in for a Moodle front page.</p><p>node ",
    );
    s.push_str(name);
    s.push_str("</p></body></html>\n");
    s.into_bytes()
}

/// The quiz page: 40 stylesheets and scripts from `/theme/`, as the tools crate's origin
/// serves it (without its in-page login script).
fn quiz_page(name: &str) -> Vec<u8> {
    let mut s = String::from("<!DOCTYPE html><html><head><title>Quiz</title>");
    for i in 0..40usize {
        if i.is_multiple_of(2) {
            s.push_str(&format!(
                "<link rel=\"stylesheet\" href=\"/theme/styles{i}.css\">"
            ));
        } else {
            s.push_str(&format!("<script src=\"/theme/script{i}.js\"></script>"));
        }
    }
    s.push_str("</head><body><h1>Quiz on ");
    s.push_str(name);
    s.push_str("</h1><p>Question 1 of 20.</p></body></html>\n");
    s.into_bytes()
}

const THEME_CSS: &[u8] = b"body { font-family: sans-serif; }\n";
const THEME_JS: &[u8] = b"window.loaded = (window.loaded || 0) + 1;\n";

struct Ctx {
    name: String,
    page: Vec<u8>,
    quiz: Vec<u8>,
}

fn head(ctx: &Ctx, out: &mut Vec<u8>, status: &str, ctype: &str, len: usize, close: bool) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: ");
    out.extend_from_slice(ctype.as_bytes());
    out.extend_from_slice(b"\r\nContent-Length: ");
    out.extend_from_slice(len.to_string().as_bytes());
    out.extend_from_slice(b"\r\nX-Node: ");
    out.extend_from_slice(ctx.name.as_bytes());
    if close {
        out.extend_from_slice(b"\r\nConnection: close");
    }
    out.extend_from_slice(b"\r\n\r\n");
}

fn find_head_end(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// A request head: what the origin answers from.
struct Req {
    method: String,
    target: String,
    close: bool,
    clen: usize,
}

/// The request in `h` (a complete head); None when it is malformed or chunked.
fn parse_request(h: &[u8]) -> Option<Req> {
    let text = std::str::from_utf8(h).ok()?;
    let mut lines = text.split("\r\n");
    let reqline = lines.next().unwrap_or("");
    let mut parts = reqline.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let version = parts.next().unwrap_or("");
    let mut close = version == "HTTP/1.0";
    let mut clen = 0usize;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            clen = v.parse().unwrap_or(0);
        } else if k.eq_ignore_ascii_case("connection") {
            if v.eq_ignore_ascii_case("close") {
                close = true;
            } else if v.eq_ignore_ascii_case("keep-alive") {
                close = false;
            }
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            return None; // chunked requests are not used by the bench
        }
    }
    Some(Req {
        method,
        target,
        close,
        clen,
    })
}

/// Processes complete requests in `rbuf`. Returns false on a malformed request.
fn process(ctx: &Ctx, c: &mut Conn) -> bool {
    loop {
        if c.body_left > 0 || c.close_after {
            return true; // finish the pending large body (or close) before the next request
        }
        if c.discard > 0 {
            let n = c.discard.min(c.rbuf.len());
            c.rbuf.drain(..n);
            c.discard -= n;
            if c.discard > 0 {
                return true;
            }
        }
        // An upload read to its end (here, or by the read loop's discard without copying)
        // is answered.
        if let Some(len) = c.upload_len.take() {
            let body = format!("length={len}\n");
            head(
                ctx,
                &mut c.wbuf,
                "200 OK",
                "text/plain",
                body.len(),
                c.upload_close,
            );
            c.wbuf.extend_from_slice(body.as_bytes());
            c.close_after = c.upload_close;
            continue;
        }
        let Some(end) = find_head_end(&c.rbuf) else {
            return c.rbuf.len() < 64 * 1024;
        };
        let Some(req) = parse_request(&c.rbuf[..end]) else {
            return false;
        };
        c.rbuf.drain(..end);
        answer(ctx, c, &req);
    }
}

/// Starts the answer to `req`: an upload's body to read first, or the response queued.
fn answer(ctx: &Ctx, c: &mut Conn, req: &Req) {
    let (method, target, close, clen) = (req.method.as_str(), &req.target, req.close, req.clen);
    let path = target.split('?').next().unwrap_or("");
    if let ("POST", "/upload") | ("PUT", "/upload") = (method, path) {
        c.discard = clen;
        c.upload_len = Some(clen);
        c.upload_close = close;
        if clen == 0 {
            c.discard = 0;
            let body = "length=0\n";
            head(ctx, &mut c.wbuf, "200 OK", "text/plain", body.len(), close);
            c.wbuf.extend_from_slice(body.as_bytes());
            c.upload_len = None;
            c.close_after = close;
        }
        return;
    }
    c.discard = clen;
    c.upload_len = None;
    respond(ctx, c, method, target, close);
    c.close_after = close;
}

/// Queues the response to a request without a body to read first.
fn respond(ctx: &Ctx, c: &mut Conn, method: &str, target: &str, close: bool) {
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/") | ("GET", "/login/index.php") | ("HEAD", "/") => {
            head(
                ctx,
                &mut c.wbuf,
                "200 OK",
                "text/html; charset=utf-8",
                ctx.page.len(),
                close,
            );
            if method == "GET" {
                c.wbuf.extend_from_slice(&ctx.page);
            }
        }
        ("GET", "/mod/quiz/view.php") => {
            let len = ctx.quiz.len();
            head(
                ctx,
                &mut c.wbuf,
                "200 OK",
                "text/html; charset=utf-8",
                len,
                close,
            );
            c.wbuf.extend_from_slice(&ctx.quiz);
        }
        ("GET", p) if p.starts_with("/theme/") => {
            let (ctype, body) = if p.ends_with(".js") {
                ("application/javascript", THEME_JS)
            } else {
                ("text/css", THEME_CSS)
            };
            head(ctx, &mut c.wbuf, "200 OK", ctype, body.len(), close);
            c.wbuf.extend_from_slice(body);
        }
        ("GET", "/download") => {
            let size = target
                .split_once('?')
                .map(|(_, q)| q)
                .unwrap_or("")
                .split('&')
                .find_map(|kv| kv.strip_prefix("size="))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(1024)
                .min(1 << 30);
            head(
                ctx,
                &mut c.wbuf,
                "200 OK",
                "application/octet-stream",
                size,
                close,
            );
            if size <= 16 * 1024 {
                c.wbuf
                    .extend_from_slice(&STATIC_BODY.get().expect("init")[..size]);
            } else {
                c.body_left = size;
            }
        }
        _ => {
            let body = b"not found\n";
            head(
                ctx,
                &mut c.wbuf,
                "404 Not Found",
                "text/plain",
                body.len(),
                close,
            );
            c.wbuf.extend_from_slice(body);
        }
    }
}

/// Writes what is pending. Ok(true) when everything is written.
fn flush(fd: RawFd, c: &mut Conn) -> io::Result<bool> {
    let stat = STATIC_BODY.get().expect("init");
    loop {
        let hlen = c.wbuf.len() - c.wpos;
        if hlen == 0 && c.body_left == 0 {
            c.wbuf.clear();
            c.wpos = 0;
            return Ok(true);
        }
        let blen = c.body_left.min(STATIC_LEN);
        let iov = [
            libc::iovec {
                iov_base: c.wbuf[c.wpos..].as_ptr() as *mut libc::c_void,
                iov_len: hlen,
            },
            libc::iovec {
                iov_base: stat.as_ptr() as *mut libc::c_void,
                iov_len: blen,
            },
        ];
        // SAFETY: both iovecs point into live buffers of the stated lengths.
        let n = unsafe { libc::writev(fd, iov.as_ptr(), 2) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                return Ok(false);
            }
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let mut n = n as usize;
        let h = n.min(hlen);
        c.wpos += h;
        n -= h;
        c.body_left -= n;
    }
}

fn listen(addr: SocketAddr) -> io::Result<RawFd> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(std::os::fd::IntoRawFd::into_raw_fd(s))
}

fn close_conn(ep: RawFd, fd: RawFd, conns: &mut HashMap<RawFd, Conn>) {
    conns.remove(&fd);
    // SAFETY: fd is a socket we own.
    unsafe {
        libc::epoll_ctl(ep, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut());
        libc::close(fd);
    }
}

fn worker(ctx: Ctx, addrs: Vec<SocketAddr>) -> io::Result<()> {
    // SAFETY: plain epoll syscalls on descriptors we own.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut listeners = Vec::new();
    for a in addrs {
        let fd = listen(a)?;
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: fd as u64,
        };
        // SAFETY: registering our listener.
        unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) };
        listeners.push(fd);
    }
    let mut conns: HashMap<RawFd, Conn> = HashMap::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut scratch = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: events has room for 256 entries.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in &events[..n as usize] {
            let fd = ev.u64 as RawFd;
            let flags = ev.events;
            if listeners.contains(&fd) {
                accept_all(ep, fd, &mut conns);
                continue;
            }
            let Some(c) = conns.get_mut(&fd) else {
                continue;
            };
            let mut dead = flags & (libc::EPOLLERR as u32) != 0;
            let mut eof = false;
            if flags & ((libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP) as u32) != 0 {
                let hangup = flags & ((libc::EPOLLRDHUP | libc::EPOLLHUP) as u32) != 0;
                let (d, e) = read_ready(&ctx, fd, c, hangup, &mut scratch);
                dead |= d;
                eof = e;
            }
            if !dead {
                dead = flush_ready(&ctx, fd, c);
            }
            if dead || eof {
                close_conn(ep, fd, &mut conns);
            }
        }
    }
}

/// Accepts every pending connection on listener `fd` and registers it with `ep`.
fn accept_all(ep: RawFd, fd: RawFd, conns: &mut HashMap<RawFd, Conn>) {
    loop {
        // SAFETY: accept4 on our nonblocking listener.
        let cfd = unsafe {
            libc::accept4(
                fd,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        if cfd < 0 {
            break;
        }
        let one: libc::c_int = 1;
        let mut cev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLET | libc::EPOLLRDHUP) as u32,
            u64: cfd as u64,
        };
        // SAFETY: configuring and registering the new socket.
        unsafe {
            libc::setsockopt(
                cfd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                &one as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as u32,
            );
            libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, cfd, &mut cev);
        }
        conns.insert(
            cfd,
            Conn {
                rbuf: Vec::new(),
                wbuf: Vec::new(),
                wpos: 0,
                body_left: 0,
                discard: 0,
                upload_len: None,
                upload_close: false,
                close_after: false,
            },
        );
    }
}

/// Reads what `fd` has, answering each complete request as it arrives. Returns (dead,
/// eof): the connection failed, or the client closed it.
fn read_ready(
    ctx: &Ctx,
    fd: RawFd,
    c: &mut Conn,
    hangup: bool,
    scratch: &mut [u8],
) -> (bool, bool) {
    loop {
        // SAFETY: reading into our scratch buffer.
        let r = unsafe { libc::read(fd, scratch.as_mut_ptr() as *mut libc::c_void, scratch.len()) };
        if r > 0 {
            let r = r as usize;
            // Edge-triggered: a short read drained the socket, and anything that arrives
            // later raises a new edge, so the read that would only say EAGAIN is skipped
            // (one system call per request less). Not when a hang-up was already reported:
            // no edge follows that.
            let drained = r < scratch.len() && !hangup;
            // discard request bodies without copying when possible
            if c.discard > 0 && c.rbuf.is_empty() && r <= c.discard {
                c.discard -= r;
                if c.discard == 0 {
                    c.rbuf.clear();
                    if !process(ctx, c) {
                        return (true, false);
                    }
                }
                if drained {
                    return (false, false);
                }
                continue;
            }
            c.rbuf.extend_from_slice(&scratch[..r]);
            if !process(ctx, c) {
                return (true, false);
            }
            if (!c.wbuf.is_empty() || c.body_left > 0) && flush(fd, c).is_err() {
                return (true, false);
            }
            if drained {
                return (false, false);
            }
        } else if r == 0 {
            return (false, true);
        } else {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return (e.kind() != io::ErrorKind::WouldBlock, false);
        }
    }
}

/// Writes what is pending; once it is all out, closes (true) or serves the pipelined
/// requests a large body held back. True: the connection is to be closed.
fn flush_ready(ctx: &Ctx, fd: RawFd, c: &mut Conn) -> bool {
    match flush(fd, c) {
        Ok(true) => {
            if c.close_after {
                true
            } else if !c.rbuf.is_empty() {
                // a large body blocked pipelined requests: serve them now
                !process(ctx, c)
                    || flush(fd, c).is_err()
                    || (c.close_after && c.wbuf.is_empty() && c.body_left == 0)
            } else {
                false
            }
        }
        Ok(false) => false,
        Err(_) => true,
    }
}

fn main() {
    let mut name = String::from("origin");
    let mut addrs: Vec<SocketAddr> = Vec::new();
    let mut threads = 2usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--name" => name = args.next().expect("--name VALUE"),
            "--listen" => addrs.push(
                args.next()
                    .expect("--listen ADDR")
                    .parse()
                    .expect("--listen takes IP:PORT"),
            ),
            "--threads" => {
                threads = args
                    .next()
                    .expect("--threads N")
                    .parse()
                    .expect("--threads takes a number")
            }
            "-h" | "--help" => {
                println!("bench-origin --name NAME --listen IP:PORT [--listen ...] [--threads N]");
                return;
            }
            other => {
                eprintln!("bench-origin: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    if addrs.is_empty() {
        eprintln!("bench-origin: at least one --listen IP:PORT is required");
        std::process::exit(2);
    }
    // SAFETY: ignoring SIGPIPE so that a write to a closed socket returns EPIPE.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    STATIC_BODY.get_or_init(|| (0..STATIC_LEN).map(|i| b'a' + (i % 26) as u8).collect());
    let mut handles = Vec::new();
    for _ in 0..threads.max(1) {
        let ctx = Ctx {
            page: small_page(&name),
            quiz: quiz_page(&name),
            name: name.clone(),
        };
        let addrs = addrs.clone();
        handles.push(std::thread::spawn(move || {
            if let Err(e) = worker(ctx, addrs) {
                eprintln!("bench-origin: {e}");
                std::process::exit(1);
            }
        }));
    }
    println!("bench-origin {name} listening on {addrs:?}");
    for h in handles {
        let _ = h.join();
    }
}
