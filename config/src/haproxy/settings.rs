//! What a `defaults` section gives and a proxy (frontend, backend, listen) sets: HAProxy
//! copies the defaults into each proxy that follows, then applies the proxy's own
//! directives. `Settings::apply` reads one directive; the translation reads the result.
//! Directives whose fate depends on the proxy (a cookie that may be renamed, http-check
//! rules that HAProxy may ignore, redirects that only plain frontends take) are stored
//! here and reported when the proxy is translated.

use super::cond::{parse_acl, Acl};
use super::emit::{at, At};
use super::model::{duration, kw, Directive, Kind};
use super::report::Reports;
use super::table::{lookup, Verdict};

/// The engine's timeout fields, in the order they are written.
pub(crate) const TIMEOUT_KEYS: [&str; 6] = [
    "timeout_connect",
    "timeout_client",
    "timeout_server",
    "timeout_http_request",
    "timeout_keep_alive",
    "timeout_queue",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LogSpec {
    Global,
    Target(String),
    Off,
}

/// `cookie NAME [insert|prefix|rewrite] [options]`, as written.
#[derive(Debug, Clone, Default)]
pub(crate) struct CookieSpec {
    pub d: Option<Directive>,
    pub name: String,
    pub mode: Option<String>,
    pub indirect: bool,
    pub nocache: bool,
    pub httponly: bool,
    pub secure: bool,
    pub domains: Vec<String>,
    pub maxidle: Option<String>,
    pub maxlife: Option<String>,
    pub samesite: Option<String>,
}

/// `option httpchk` and `http-check send`: what the probe sends.
#[derive(Debug, Clone, Default)]
pub(crate) struct Probe {
    pub method: Option<At<String>>,
    pub uri: Option<At<String>>,
    pub host: Option<At<String>>,
}

#[derive(Debug, Clone)]
pub(crate) struct Redirect {
    pub d: Directive,
    pub code: At<i64>,
    /// From `if`/`unless` on (empty: always).
    pub cond: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub d: Directive,
    pub name: String,
    pub value: String,
    pub add: bool,
    pub cond: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Settings {
    /// `mode tcp` (or another mode than http): the proxy cannot be carried.
    pub mode: Option<Directive>,
    /// A `mode http` line applies (HAProxy's default mode is tcp).
    pub http_mode: bool,
    pub log: Option<At<LogSpec>>,
    pub httplog: Option<At<bool>>,
    pub dontlognull: Option<At<bool>>,
    pub forwardfor: Option<At<bool>>,
    pub timeouts: [Option<At<String>>; 6],
    pub check_timeout: Option<At<String>>,
    pub retries: Option<At<i64>>,
    pub balance: Option<At<String>>,
    pub cookie: Option<CookieSpec>,
    /// The `option httpchk` line, and what it asks.
    pub httpchk: Option<(Directive, Probe)>,
    /// `http-check send` (overrides `option httpchk`'s arguments).
    pub send: Probe,
    /// Every `http-check` line (send and expect), for the report.
    pub check_rules: Vec<Directive>,
    pub expect_status: Option<At<String>>,
    pub expect_string: Option<At<String>>,
    pub redirects: Vec<Redirect>,
    pub headers: Vec<Header>,
    pub errorfile_503: Option<At<String>>,
    pub default_backend: Option<At<String>>,
    pub use_backend: Option<At<String>>,
    pub default_server: Vec<Directive>,
    /// `stats enable`, `stats uri`, ...: a stats page.
    pub stats: Vec<Directive>,
    pub acls: Vec<Acl>,
}

/// Whether `apply` took the directive.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Took {
    Yes,
    /// `bind` and `server`: the proxy's own, read by the translation.
    Proxy,
}

fn int_arg(d: &Directive, i: usize) -> Option<i64> {
    d.words.get(i).and_then(|w| w.parse::<i64>().ok())
}

impl Settings {
    /// Reads one directive of a defaults or proxy section of `kind`.
    pub fn apply(&mut self, d: &Directive, kind: Kind, rep: &mut Reports) -> Took {
        let w0 = kw(d, 0);
        match w0.as_str() {
            "bind" | "server" => return Took::Proxy,
            "mode" => self.mode(d, rep),
            "log" => self.log(d, rep),
            "option" | "no" => self.option(d, rep),
            "timeout" | "contimeout" | "clitimeout" | "srvtimeout" => self.timeout(d, rep),
            "retries" => match int_arg(d, 1) {
                Some(n) if (0..=100).contains(&n) => {
                    self.retries = Some(at(n, d.no));
                    rep.carried(d, format!("retries = {n}"));
                }
                _ => rep.not_carried(d, "not a number of retries from 0 to 100", "retries = 3"),
            },
            "maxconn" => rep.not_carried(
                d,
                "a connection limit per frontend: the engine's limit holds for all frontends together",
                "global.maxconn in [global]",
            ),
            "balance" => self.balance(d, rep),
            "cookie" => self.cookie(d, rep),
            "http-check" => self.http_check(d, rep),
            "redirect" => self.redirect(d, &d.words[1..], rep),
            "http-request" => self.http_request(d, rep),
            "errorfile" => self.errorfile(d, rep),
            "default_backend" => match d.words.get(1) {
                Some(b) => self.default_backend = Some(at(b.clone(), d.no)),
                None => rep.not_carried(d, "no backend named", "backend = \"NAME\""),
            },
            "use_backend" => self.use_backend(d, rep),
            "default-server" => self.default_server.push(d.clone()),
            "acl" => match parse_acl(d) {
                Some(a) => self.acls.push(a),
                None => rep.not_carried(d, "an ACL without a name", "fix the ACL in the HAProxy file"),
            },
            "stats" if kind != Kind::Defaults => self.stats.push(d.clone()),
            _ => unknown(d, rep),
        }
        Took::Yes
    }

    fn mode(&mut self, d: &Directive, rep: &mut Reports) {
        match kw(d, 1).as_str() {
            "http" => {
                self.mode = None;
                self.http_mode = true;
                rep.not_needed(
                    d,
                    "the engine is an HTTP load balancer: every proxy is in HTTP mode",
                );
            }
            m => {
                self.mode = Some(d.clone());
                self.http_mode = false;
                rep.not_carried(
                    d,
                    format!("mode {m}: the engine proxies HTTP only; the proxies in this mode are left out"),
                    "keep HAProxy (or another TCP proxy) for this traffic",
                );
            }
        }
    }

    fn log(&mut self, d: &Directive, rep: &mut Reports) {
        let spec = match kw(d, 1).as_str() {
            "global" => LogSpec::Global,
            "" => return rep.not_carried(d, "a log line without a target", "[log] access"),
            _ => LogSpec::Target(d.words[1].clone()),
        };
        if matches!(spec, LogSpec::Global) {
            rep.not_needed(
                d,
                "the engine has one access log ([log]); this proxy's requests go to it",
            );
        }
        self.log = Some(at(spec, d.no));
    }

    fn option(&mut self, d: &Directive, rep: &mut Reports) {
        let no = kw(d, 0) == "no";
        let (name, first_arg) = if no { (kw(d, 2), 3) } else { (kw(d, 1), 2) };
        if no && kw(d, 1) == "log" {
            self.log = Some(at(LogSpec::Off, d.no));
            return rep.carried(d, "no access log for this proxy");
        }
        if no && kw(d, 1) != "option" {
            return unknown(d, rep);
        }
        match name.as_str() {
            "httplog" => {
                self.httplog = Some(at(!no, d.no));
                if d.words.len() > first_arg {
                    rep.changed(d, "format = \"httplog\": the engine writes HAProxy's httplog fields (not the CLF variant)");
                } else {
                    rep.carried(d, "[log] format = \"httplog\"");
                }
            }
            "dontlognull" => {
                self.dontlognull = Some(at(!no, d.no));
                rep.carried(d, format!("[log] dontlognull = {}", !no));
            }
            "forwardfor" => {
                self.forwardfor = Some(at(!no, d.no));
                if d.words.len() > first_arg {
                    rep.changed(d, format!("forwarded_for = {}: the client's address in X-Forwarded-For, for every client (its options `{}` are not carried)", !no, d.words[first_arg..].join(" ")));
                } else if no {
                    rep.carried(d, "forwarded_for = false");
                } else {
                    rep.carried(d, "forwarded_for = true (the engine replaces any X-Forwarded-For the client sent by the client's address; HAProxy appended its own)");
                }
            }
            "httpchk" if !no => self.httpchk(d),
            _ => unknown(d, rep),
        }
    }

    /// `option httpchk [URI]` or `option httpchk METHOD URI [VERSION]`; the version may
    /// carry headers (`HTTP/1.1\r\nHost:\ moodle`).
    fn httpchk(&mut self, d: &Directive) {
        let args = &d.words[2..];
        let mut p = Probe::default();
        match args {
            [] => {}
            [uri] => p.uri = Some(at(uri.clone(), d.no)),
            [m, uri, rest @ ..] => {
                p.method = Some(at(m.clone(), d.no));
                p.uri = Some(at(uri.clone(), d.no));
                for h in rest.iter().flat_map(|v| v.split("\r\n").skip(1)) {
                    if let Some((n, v)) = h.split_once(':') {
                        if n.trim().eq_ignore_ascii_case("host") {
                            p.host = Some(at(v.trim().to_owned(), d.no));
                        }
                    }
                }
            }
        }
        self.httpchk = Some((d.clone(), p));
    }

    fn timeout(&mut self, d: &Directive, rep: &mut Reports) {
        let (which, value) = match kw(d, 0).as_str() {
            "contimeout" => ("connect".to_owned(), d.words.get(1)),
            "clitimeout" => ("client".to_owned(), d.words.get(1)),
            "srvtimeout" => ("server".to_owned(), d.words.get(1)),
            _ => (kw(d, 1), d.words.get(2)),
        };
        let slot = match which.as_str() {
            "connect" => Some(0),
            "client" => Some(1),
            "server" => Some(2),
            "http-request" => Some(3),
            "http-keep-alive" => Some(4),
            "queue" => Some(5),
            _ => None,
        };
        let value = value.map(String::as_str).unwrap_or("");
        let engine = match duration(value) {
            Ok(v) => v,
            Err(e) => return rep.not_carried(d, e, "write the timeout with a unit, e.g. \"5s\""),
        };
        match (slot, which.as_str()) {
            (Some(i), _) => {
                self.timeouts[i] = Some(at(engine.clone(), d.no));
                rep.carried(d, format!("{} = \"{engine}\"", TIMEOUT_KEYS[i]));
            }
            (None, "check") => {
                self.check_timeout = Some(at(engine.clone(), d.no));
                rep.carried(d, format!("[backend.check] timeout = \"{engine}\""));
            }
            (None, "tunnel") => rep.not_carried(
                d,
                "the engine's WebSocket tunnels time out after the larger of timeout_client and timeout_server",
                "raise timeout_client and timeout_server if tunnels need longer",
            ),
            (None, w) => rep.not_carried(
                d,
                format!("timeout {w}: the engine has no such timeout"),
                "timeout_connect, timeout_client, timeout_server, timeout_http_request, timeout_keep_alive, timeout_queue",
            ),
        }
    }

    fn balance(&mut self, d: &Directive, rep: &mut Reports) {
        let alg = kw(d, 1);
        match alg.as_str() {
            "roundrobin" | "leastconn" => {
                self.balance = Some(at(alg.clone(), d.no));
                rep.carried(d, format!("balance = \"{alg}\""));
            }
            "static-rr" => {
                self.balance = Some(at("roundrobin".into(), d.no));
                rep.changed(d, "balance = \"roundrobin\" (smooth weighted round-robin; weights can change at run time)");
            }
            _ => rep.not_carried(
                d,
                format!("balance {alg}: the engine balances by round-robin or least connections"),
                "balance = \"roundrobin\" (written by default) or \"leastconn\"; persistence is the cookie",
            ),
        }
    }

    fn cookie(&mut self, d: &Directive, rep: &mut Reports) {
        let Some(name) = d.words.get(1) else {
            return rep.not_carried(
                d,
                "a cookie without a name",
                "[backend.cookie] name = \"SERVERID\"",
            );
        };
        let mut c = CookieSpec {
            d: Some(d.clone()),
            name: name.clone(),
            ..CookieSpec::default()
        };
        let mut i = 2;
        while i < d.words.len() {
            let w = d.words[i].to_ascii_lowercase();
            let arg = d.words.get(i + 1).cloned();
            match w.as_str() {
                "insert" | "prefix" | "rewrite" => c.mode = Some(w),
                "indirect" => c.indirect = true,
                "nocache" => c.nocache = true,
                "httponly" => c.httponly = true,
                "secure" => c.secure = true,
                "domain" | "maxidle" | "maxlife" | "attr" => {
                    i += 1;
                    let Some(arg) = arg else { break };
                    match w.as_str() {
                        "domain" => c.domains.push(arg),
                        "attr" => self.cookie_attr(d, &mut c, &arg, rep),
                        _ => match duration(&arg) {
                            Ok(v) if w == "maxidle" => c.maxidle = Some(v),
                            Ok(v) => c.maxlife = Some(v),
                            Err(e) => rep.not_carried(d, format!("{w}: {e}"), "write the duration with a unit in [backend.cookie], e.g. maxidle = \"30m\""),
                        },
                    }
                }
                "postonly" | "preserve" | "dynamic" => rep.not_carried(
                    d,
                    format!("the cookie option `{w}`"),
                    "none: the engine sets the cookie on the first response of a new client",
                ),
                _ => rep.not_carried(d, format!("the cookie option `{w}`"), "no counterpart in the engine: leave it out (cookie fields: mode, indirect, nocache, httponly, secure, samesite, domain, maxidle, maxlife)"),
            }
            i += 1;
        }
        self.cookie = Some(c);
    }

    fn cookie_attr(&mut self, d: &Directive, c: &mut CookieSpec, attr: &str, rep: &mut Reports) {
        match attr.split_once('=') {
            Some((k, v)) if k.trim().eq_ignore_ascii_case("samesite") => {
                let v = v.trim();
                let mut canon = v.to_ascii_lowercase();
                if let Some(f) = canon.get_mut(0..1) {
                    f.make_ascii_uppercase();
                }
                c.samesite = Some(canon);
            }
            _ => rep.not_carried(
                d,
                format!("the cookie attribute `{attr}`"),
                "samesite, domain, httponly, secure, maxidle and maxlife are the attributes the engine sets",
            ),
        }
    }

    fn use_backend(&mut self, d: &Directive, rep: &mut Reports) {
        let Some(b) = d.words.get(1) else {
            return rep.not_carried(d, "no backend named", "backend = \"NAME\" in the frontend");
        };
        if d.words.len() > 2 || b.contains("%[") {
            let what = if b.contains("map") {
                "routing through a map"
            } else {
                "routing by condition (ACLs)"
            };
            return rep.not_carried(
                d,
                format!("{what}: every request of an engine frontend goes to its one backend"),
                "give each group of sites its own frontend (address or port) with its backend; the requests this rule routed go to the frontend's default backend",
            );
        }
        if self.use_backend.is_none() {
            self.use_backend = Some(at(b.clone(), d.no));
        }
    }

    fn errorfile(&mut self, d: &Directive, rep: &mut Reports) {
        match (d.words.get(1).map(String::as_str), d.words.get(2)) {
            (Some("503"), Some(p)) => self.errorfile_503 = Some(at(p.clone(), d.no)),
            (Some(code), _) => rep.not_carried(
                d,
                format!("errorfile {code}: the engine's custom error response is the 503 one (no server can take the request)"),
                "none: the engine answers other errors with its own short page",
            ),
            _ => rep.not_carried(d, "an errorfile without a status", "errorfile_503 = \"PATH\" in the backend"),
        }
    }

    fn http_request(&mut self, d: &Directive, rep: &mut Reports) {
        let action = kw(d, 1);
        match action.as_str() {
            "redirect" => self.redirect(d, &d.words[2..], rep),
            "set-header" | "add-header" => {
                let (Some(name), Some(value)) = (d.words.get(2), d.words.get(3)) else {
                    return rep.not_carried(
                        d,
                        "a header rule without a name and a value",
                        "set_headers = { \"NAME\" = \"VALUE\" } in the frontend",
                    );
                };
                let cond = d.words[4..].to_vec();
                if value.replace("%%", "").contains('%') {
                    return rep.not_carried(
                        d,
                        "a header value computed per request (%[...] or a log-format variable)",
                        "set_headers takes fixed values only",
                    );
                }
                self.headers.push(Header {
                    d: d.clone(),
                    name: name.clone(),
                    value: value.replace("%%", "%"),
                    add: action == "add-header",
                    cond,
                });
            }
            _ => unknown(d, rep),
        }
    }

    /// `redirect ...` or `http-request redirect ...`; `args` starts at `scheme`.
    fn redirect(&mut self, d: &Directive, args: &[String], rep: &mut Reports) {
        let scheme = args.first().map(|w| w.to_ascii_lowercase());
        let target = args.get(1).map(|w| w.to_ascii_lowercase());
        if scheme.as_deref() != Some("scheme") || target.as_deref() != Some("https") {
            return rep.not_carried(
                d,
                "redirects other than `redirect scheme https`",
                "none in the engine: put the redirect in Moodle or in the web server behind it",
            );
        }
        let mut code = at(302, d.no);
        let mut i = 2;
        while i < args.len() {
            match args[i].as_str() {
                "code" => {
                    match args.get(i + 1).and_then(|c| c.parse::<i64>().ok()) {
                        Some(c) => code = at(c, d.no),
                        None => rep.not_carried(
                            d,
                            "a redirect code that is not a number",
                            "code = 301 in redirect_https",
                        ),
                    }
                    i += 1;
                }
                "if" | "unless" => break,
                o => rep.not_carried(
                    d,
                    format!("the redirect option `{o}`"),
                    "none: the engine's redirect keeps the path and query as they were",
                ),
            }
            i += 1;
        }
        self.redirects.push(Redirect {
            d: d.clone(),
            code,
            cond: args[i.min(args.len())..].to_vec(),
        });
    }

    fn http_check(&mut self, d: &Directive, rep: &mut Reports) {
        match kw(d, 1).as_str() {
            "send" => {
                self.check_rules.push(d.clone());
                self.check_send(d, rep);
            }
            "expect" => {
                self.check_rules.push(d.clone());
                self.check_expect(d, rep);
            }
            "comment" => rep.not_needed(d, "a comment for HAProxy's check log"),
            "connect" if d.words.len() == 2 => {
                rep.not_needed(d, "the engine's check connects to the server's address")
            }
            "disable-on-404" => rep.not_carried(
                d,
                "a 404 answer taking the server out of rotation gently",
                "set server B/S state drain on the admin socket (DRAIN keeps its sticky clients)",
            ),
            "send-state" => rep.not_carried(d, "sending the check state to the server", "none needed: the server's state shows in show servers and /stats.json"),
            w => rep.not_carried(
                d,
                format!("http-check {w}: multi-step and custom checks"),
                "one request per check: [backend.check] method, uri, host, expect_status, expect_string",
            ),
        }
    }
}

/// A directive the translation does not handle: the table's verdict, or "unknown".
pub(crate) fn unknown(d: &Directive, rep: &mut Reports) {
    match lookup(&d.words) {
        Some((Verdict::NotNeeded, why, _)) => rep.not_needed(d, why),
        Some((Verdict::NotCarried, why, instead)) => rep.not_carried(d, why, instead),
        None => rep.not_carried(
            d,
            "the importer does not know this directive",
            "see README.md for the engine's settings; write the counterpart in lb.toml if there is one",
        ),
    }
}
