//! The Moodle-like pages: the home page, `/health`, the login page and the login itself
//! (a session local to this node, in a `MoodleSession` cookie), the dashboard, and quiz
//! submissions counted per user and per attempt.

use super::listener::Session;
use super::request::{form_field, Sink};
use super::response::{html_escape, Src, HTML, TEXT};
use super::{lock, E};
use std::sync::atomic::{AtomicU64, Ordering};

/// Largest form body (login, quiz).
const MAX_FORM: usize = 1 << 20;
const SESSION_COOKIE: &str = "MoodleSession";

fn random_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    static CTR: AtomicU64 = AtomicU64::new(0);
    let mut out = String::with_capacity(32);
    for _ in 0..2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(CTR.fetch_add(1, Ordering::Relaxed));
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        h.write_u128(t);
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

impl Session<'_> {
    /// The user of the `MoodleSession` this node issued, if the request carries one.
    fn session_user(&self) -> Option<String> {
        let sessions = lock(&self.inner.sessions);
        self.req
            .cookie
            .split(';')
            .filter_map(|c| c.trim().split_once('='))
            .filter(|(k, _)| *k == SESSION_COOKIE)
            .find_map(|(_, v)| sessions.get(v.trim()).cloned())
    }

    /// `GET /`: a small HTML page naming the node.
    pub(super) fn home(&mut self, mid: bool) -> Result<bool, E> {
        self.read_body(Sink::Discard)?;
        self.tbuf.clear();
        self.tbuf.extend_from_slice(
            b"<!DOCTYPE html><html><head><title>Moodle-like origin</title></head><body><h1>Moodle-like origin ",
        );
        html_escape(&mut self.tbuf, &self.inner.name);
        self.tbuf.extend_from_slice(
            b"</h1><p><a href=\"/login/index.php\">Log in</a></p></body></html>\n",
        );
        self.respond(200, HTML, &[], Src::Text, mid)
    }

    /// `GET /health`: 200, or 503 while unhealthy; never cut by a fault.
    pub(super) fn health(&mut self) -> Result<bool, E> {
        self.read_body(Sink::Discard)?;
        let node = self.inner.name.as_bytes();
        if self.inner.healthy.load(Ordering::SeqCst) {
            self.text(&[b"OK Moodle ", node, b"\n"]);
            self.respond(200, TEXT, &[], Src::Text, false)
        } else {
            self.text(&[b"unhealthy ", node, b"\n"]);
            self.respond(503, TEXT, &[], Src::Text, false)
        }
    }

    /// `GET /login/index.php`: the login form, or 503 while unhealthy.
    pub(super) fn login_page(&mut self, mid: bool) -> Result<bool, E> {
        self.read_body(Sink::Discard)?;
        if !self.inner.healthy.load(Ordering::SeqCst) {
            self.text(&[b"site maintenance on ", self.inner.name.as_bytes(), b"\n"]);
            return self.respond(503, TEXT, &[], Src::Text, mid);
        }
        self.tbuf.clear();
        self.tbuf.extend_from_slice(
            b"<!DOCTYPE html><html><head><title>Moodle: Log in to the site</title></head><body><h1>Moodle</h1><p>Node: ",
        );
        html_escape(&mut self.tbuf, &self.inner.name);
        self.tbuf.extend_from_slice(
            b"</p><form method=\"post\" action=\"/login/index.php\"><input type=\"text\" name=\"username\"><input type=\"password\" name=\"password\"><button type=\"submit\">Log in</button></form></body></html>\n",
        );
        self.respond(200, HTML, &[], Src::Text, mid)
    }

    /// `POST /login/index.php`: a new session for `username`, then 303 to the dashboard.
    pub(super) fn login(&mut self, mid: bool) -> Result<bool, E> {
        self.body.clear();
        self.read_body(Sink::Collect(MAX_FORM))?;
        let user = match form_field(&self.body, "username") {
            Some(u) if !u.is_empty() => u,
            _ => return Err(E::Reject(400, "missing username")),
        };
        let id = random_id();
        lock(&self.inner.sessions).insert(id.clone(), user);
        let cookie = format!("{SESSION_COOKIE}={id}; path=/; HttpOnly");
        self.text(&[b"see /my/\n"]);
        self.respond(
            303,
            TEXT,
            &[("Location", "/my/"), ("Set-Cookie", &cookie)],
            Src::Text,
            mid,
        )
    }

    /// `GET /my/`: the dashboard of the session's user, or 303 to the login page.
    pub(super) fn dashboard(&mut self, mid: bool) -> Result<bool, E> {
        self.read_body(Sink::Discard)?;
        match self.session_user() {
            Some(user) => {
                let node = self.inner.name.as_bytes();
                self.text(&[b"Dashboard of ", user.as_bytes(), b" on ", node]);
                self.respond(200, TEXT, &[], Src::Text, mid)
            }
            None => self.redirect_login(mid),
        }
    }

    /// `POST /mod/quiz/processattempt.php`: one submission for (user, attempt).
    pub(super) fn quiz_submit(&mut self, mid: bool) -> Result<bool, E> {
        self.body.clear();
        self.read_body(Sink::Collect(MAX_FORM))?;
        let Some(user) = self.session_user() else {
            return self.redirect_login(mid);
        };
        let attempt = match form_field(&self.body, "attempt") {
            Some(a) if !a.is_empty() => a,
            _ => return Err(E::Reject(400, "missing attempt")),
        };
        let inner = self.inner;
        *lock(&inner.submissions).entry(user.clone()).or_insert(0) += 1;
        *lock(&inner.attempts)
            .entry((user.clone(), attempt.clone()))
            .or_insert(0) += 1;
        self.text(&[
            b"submitted ",
            user.as_bytes(),
            b" attempt ",
            attempt.as_bytes(),
            b" on ",
            inner.name.as_bytes(),
        ]);
        self.respond(200, TEXT, &[], Src::Text, mid)
    }

    fn redirect_login(&mut self, mid: bool) -> Result<bool, E> {
        self.text(&[b"see /login/index.php\n"]);
        self.respond(
            303,
            "text/plain; charset=utf-8",
            &[("Location", "/login/index.php")],
            Src::Text,
            mid,
        )
    }
}

/// Assets the quiz page pulls (a Moodle quiz page pulls 30 to 80).
pub const QUIZ_ASSETS: usize = 40;

impl Session<'_> {
    /// `GET /mod/quiz/view.php`: a quiz page that pulls [`QUIZ_ASSETS`] stylesheets and
    /// scripts from `/theme/`, then (its script, once loaded) reports the protocol of the
    /// page and of each asset (`nextHopProtocol`) and logs `alice` in, into the page.
    pub(super) fn quiz_page(&mut self, mid: bool) -> Result<bool, E> {
        self.read_body(Sink::Discard)?;
        let mut page = String::from("<!DOCTYPE html><html><head><title>Quiz</title>");
        for i in 0..QUIZ_ASSETS {
            if i % 2 == 0 {
                page.push_str(&format!(
                    "<link rel=\"stylesheet\" href=\"/theme/styles{i}.css\">"
                ));
            } else {
                page.push_str(&format!("<script src=\"/theme/script{i}.js\"></script>"));
            }
        }
        page.push_str("</head><body><h1>Quiz on ");
        page.push_str(&self.inner.name);
        page.push_str(concat!(
            "</h1><script>window.addEventListener('load', async () => {",
            "const nav = performance.getEntriesByType('navigation')[0].nextHopProtocol;",
            "const res = performance.getEntriesByType('resource').filter(e => e.name.includes('/theme/'));",
            "const h2 = res.filter(e => e.nextHopProtocol === 'h2').length;",
            "const r = await fetch('/login/index.php', {method: 'POST', headers: {'Content-Type': 'application/x-www-form-urlencoded'}, body: 'username=alice&password=secret'});",
            "const t = await r.text();",
            "const d = document.createElement('pre'); d.id = 'result';",
            "d.textContent = 'nav=' + nav + ' assets=' + res.length + ' h2=' + h2 + ' login=' + (t.includes('Dashboard of alice') ? 'ok' : 'failed');",
            "document.body.appendChild(d);});</script></body></html>\n",
        ));
        self.text(&[page.as_bytes()]);
        self.respond(200, HTML, &[], Src::Text, mid)
    }

    /// `GET /theme/NAME`: a small stylesheet or script.
    pub(super) fn theme(&mut self, mid: bool) -> Result<bool, E> {
        self.read_body(Sink::Discard)?;
        let js = self.req.path.ends_with(".js");
        let (ctype, body): (&str, &[u8]) = if js {
            (
                "application/javascript",
                b"window.loaded = (window.loaded || 0) + 1;\n",
            )
        } else {
            ("text/css", b"body { font-family: sans-serif; }\n")
        };
        self.text(&[body]);
        self.respond(200, ctype, &[("Cache-Control", "no-store")], Src::Text, mid)
    }
}
