//! A student's browser and the exam script: login page, login, dashboard, quiz
//! submission, dashboard again, which catches the login loop. [`Browser`] speaks plain
//! HTTP in-process; [`crate::curl::CurlBrowser`] runs the same script over HTTPS.

use std::net::SocketAddr;

use crate::{Conn, Response};

/// The cookie jar of one student, and the connection of the lab machine they sit at.
pub struct Browser {
    pub addr: SocketAddr,
    pub conn: Option<Conn>,
    pub jar: Vec<(String, String)>,
    /// How long a connect may take (10 s unless set).
    pub connect_timeout: std::time::Duration,
}

impl Browser {
    pub fn new(addr: SocketAddr) -> Browser {
        Browser {
            addr,
            conn: None,
            jar: Vec::new(),
            connect_timeout: std::time::Duration::from_secs(10),
        }
    }

    pub fn cookie_header(&self) -> String {
        self.jar
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        form: Option<&str>,
    ) -> Result<Response, String> {
        let mut c = match self.conn.take() {
            Some(c) => c,
            None => Conn::connect_within(self.addr, self.connect_timeout)
                .map_err(|e| format!("connect: {e}"))?,
        };
        let cookie = self.cookie_header();
        let mut h: Vec<(&str, &str)> = Vec::new();
        if !cookie.is_empty() {
            h.push(("Cookie", &cookie));
        }
        if form.is_some() {
            h.push(("Content-Type", "application/x-www-form-urlencoded"));
        }
        let resp = c
            .request(method, path, &h, form.unwrap_or("").as_bytes())
            .map_err(|e| format!("{method} {path}: {e}"))?;
        if !resp.complete {
            return Err(format!("{method} {path}: cut response"));
        }
        for sc in resp.headers_all("set-cookie") {
            let first = sc.split(';').next().unwrap_or("");
            if let Some((k, v)) = first.split_once('=') {
                let (k, v) = (k.trim().to_string(), v.trim().to_string());
                self.jar.retain(|(n, _)| *n != k);
                let gone = v.is_empty() || v == "deleted";
                if !gone {
                    self.jar.push((k, v));
                }
            }
        }
        let close = resp
            .header("connection")
            .is_some_and(|v| v.to_ascii_lowercase().contains("close"));
        if !close {
            self.conn = Some(c);
        }
        Ok(resp)
    }
}

/// A student's browser: requests that keep the cookies the answers set.
pub trait Student {
    fn request(&mut self, method: &str, path: &str, form: Option<&str>)
        -> Result<Response, String>;
}

impl Student for Browser {
    fn request(
        &mut self,
        method: &str,
        path: &str,
        form: Option<&str>,
    ) -> Result<Response, String> {
        Browser::request(self, method, path, form)
    }
}

/// How one student's exam went.
pub enum Outcome {
    /// Dashboard and submission on this node.
    Done(String),
    /// Sent back to the login page after logging in.
    Loop(String),
}

/// A redirect to the login page: the login loop.
pub fn to_login(resp: &Response) -> bool {
    resp.status / 100 == 3
        && resp
            .header("location")
            .is_some_and(|l| l.contains("/login/"))
}

/// Login page, login, dashboard, quiz submission, dashboard again.
pub fn exam(b: &mut impl Student, user: &str, attempt: &str) -> Result<Outcome, String> {
    let resp = b.request("GET", "/login/index.php", None)?;
    if resp.status != 200 || !resp.text().contains("Moodle") {
        return Err(format!(
            "{user}: login page {} {}",
            resp.status,
            resp.text()
        ));
    }
    let form = format!("username={user}&password=secret");
    let resp = b.request("POST", "/login/index.php", Some(&form))?;
    if resp.status / 100 != 3 || !resp.header("location").is_some_and(|l| l.contains("/my/")) {
        return Err(format!(
            "{user}: login answered {} {:?} {}",
            resp.status,
            resp.headers,
            resp.text()
        ));
    }
    let resp = b.request("GET", "/my/", None)?;
    if to_login(&resp) {
        return Ok(Outcome::Loop(format!(
            "{user}: dashboard sent back to the login page"
        )));
    }
    let want = format!("Dashboard of {user} on ");
    let text = resp.text();
    if resp.status != 200 || !text.contains(&want) {
        return Err(format!("{user}: dashboard {} {text}", resp.status));
    }
    let home = text[text.find(&want).unwrap() + want.len()..]
        .trim()
        .to_string();
    let form = format!("attempt={attempt}&answer=42");
    let resp = b.request("POST", "/mod/quiz/processattempt.php", Some(&form))?;
    if to_login(&resp) {
        return Ok(Outcome::Loop(format!(
            "{user}: quiz submission sent to the login page"
        )));
    }
    let want = format!("submitted {user} attempt {attempt} on {home}");
    if resp.status != 200 || !resp.text().contains(&want) {
        return Err(format!(
            "{user}: submission {} {} (want {want})",
            resp.status,
            resp.text()
        ));
    }
    let resp = b.request("GET", "/my/", None)?;
    if to_login(&resp) {
        return Ok(Outcome::Loop(format!(
            "{user}: logged out after submitting"
        )));
    }
    if resp.status != 200 || !resp.text().contains(&home) {
        return Err(format!(
            "{user}: dashboard after submitting {} {}",
            resp.status,
            resp.text()
        ));
    }
    Ok(Outcome::Done(home))
}
