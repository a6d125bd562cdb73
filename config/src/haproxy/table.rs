//! What the importer says of the directives it does not translate: those the engine does
//! not need (and why) and those it cannot carry (and what to do instead). The directives
//! it translates are handled in `settings`, `translate`, `servers` and `check`.

/// Not needed, or not carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    NotNeeded,
    NotCarried,
}

use Verdict::{NotCarried as NC, NotNeeded as NN};

const SYSTEMD: &str = "the engine runs in the foreground under systemd (Type=simple, Restart=on-failure): it does not fork, and systemd tracks its process";
const CORES: &str = "the engine runs one worker per core, pinned (engine --cores N, --no-pin)";
const RUSTLS: &str = "the engine's TLS (rustls) offers TLS 1.2 and 1.3 only, with modern cipher suites and no DHE: nothing to tune";
const KEEPALIVE: &str = "the engine keeps connections alive both ways and reuses server connections from per-core pools";
const PROCESS: &str = "an HAProxy process option with no counterpart to set";
const NOT_HTTP_CHECK: &str = "the engine's health checks are HTTP: write them in [backend.check] (method, uri, host, expect_status, expect_string)";
const STICK: &str =
    "persistence is the cookie ([backend.cookie]): a client sticks to the server its cookie names";
const NO_COUNTERPART: &str =
    "no counterpart in the engine: leave it out (the engine's own behaviour applies)";
const RULES: &str = "nothing in the engine; do it in Moodle or in the web server behind it";

/// (key, verdict, why, what to do instead). The key is the first word, or the first two
/// for `option`, `timeout`, `stats`, `http-request`, ... (lowercase).
const TABLE: &[(&str, Verdict, &str, &str)] = &[
    ("chroot", NN, "the engine is not chrooted: it reads its certificates again on every reload, as the user it drops to (global.user); confine it with systemd instead (ProtectSystem=strict, ReadOnlyPaths=)", ""),
    ("daemon", NN, SYSTEMD, ""),
    ("master-worker", NN, "the engine is one process: SIGHUP reloads its configuration in place", ""),
    ("pidfile", NN, SYSTEMD, ""),
    ("stats timeout", NN, "the admin socket answers each command at once; there is no session timeout to set", ""),
    ("stats maxconn", NN, "the admin socket needs no connection limit", ""),
    ("stats bind-process", NN, CORES, ""),
    ("nbthread", NN, CORES, ""),
    ("nbproc", NN, CORES, ""),
    ("cpu-map", NN, CORES, ""),
    ("bind-process", NN, CORES, ""),
    ("thread-groups", NN, CORES, ""),
    ("ulimit-n", NN, "the engine raises RLIMIT_NOFILE to fit global.maxconn itself (set LimitNOFILE= in systemd where the hard limit is lower)", ""),
    ("ssl-default-bind-ciphers", NN, RUSTLS, ""),
    ("ssl-default-bind-ciphersuites", NN, RUSTLS, ""),
    ("ssl-default-bind-options", NN, RUSTLS, ""),
    ("ssl-default-bind-curves", NN, RUSTLS, ""),
    ("ssl-default-bind-sigalgs", NN, RUSTLS, ""),
    ("ssl-default-server-ciphers", NN, "the engine speaks plain HTTP to its servers", ""),
    ("ssl-default-server-ciphersuites", NN, "the engine speaks plain HTTP to its servers", ""),
    ("ssl-default-server-options", NN, "the engine speaks plain HTTP to its servers", ""),
    ("ssl-server-verify", NN, "the engine speaks plain HTTP to its servers", ""),
    ("ssl-dh-param-file", NN, RUSTLS, ""),
    ("tune.ssl.default-dh-param", NN, RUSTLS, ""),
    ("tune.ssl.cachesize", NN, "the engine keeps a TLS session cache per core and shares session tickets across cores (tls.session_resumption)", ""),
    ("tune.ssl.lifetime", NN, "the engine keeps a TLS session cache per core and shares session tickets across cores (tls.session_resumption)", ""),
    ("tune.bufsize", NC, "HAProxy's buffer size bounds a request head", "[limits] max_head_bytes (16384 by default, HAProxy's default bufsize too)"),
    ("option http-server-close", NN, KEEPALIVE, ""),
    ("option http-keep-alive", NN, KEEPALIVE, ""),
    ("option httpclose", NN, KEEPALIVE, ""),
    ("option forceclose", NN, KEEPALIVE, ""),
    ("option http-pretend-keepalive", NN, KEEPALIVE, ""),
    ("option prefer-last-server", NN, KEEPALIVE, ""),
    ("http-reuse", NN, KEEPALIVE, ""),
    ("option redispatch", NN, "the engine always redispatches: a request whose cookie names a server that is down is balanced anew, and a failed connect is retried on another server", ""),
    ("option log-health-checks", NN, "the engine logs each server state change once, with its reason", ""),
    ("option splice-auto", NN, "the engine splices large bodies between sockets itself", ""),
    ("option splice-request", NN, "the engine splices large bodies between sockets itself", ""),
    ("option splice-response", NN, "the engine splices large bodies between sockets itself", ""),
    ("option http-use-htx", NN, PROCESS, ""),
    ("option contstats", NN, "the engine's counters are always current (show servers, /stats.json, /metrics)", ""),
    ("option socket-stats", NN, "the engine's counters are per server (show servers, /stats.json, /metrics)", ""),
    ("server-state-file", NN, "a reload keeps every unchanged server's health state, admin overrides and counters in memory", ""),
    ("server-state-base", NN, "a reload keeps every unchanged server's health state, admin overrides and counters in memory", ""),
    ("load-server-state-from-file", NN, "a reload keeps every unchanged server's health state, admin overrides and counters in memory", ""),
    ("id", NN, "a numeric id the engine does not use (it names proxies and servers)", ""),
    ("description", NN, "a label the engine does not show", ""),
    ("node", NN, "a label the engine does not show", ""),
    ("quiet", NN, PROCESS, ""),
    ("zero-warning", NN, "engine check lists every warning", ""),
    ("expose-experimental-directives", NN, PROCESS, ""),
    ("insecure-fork-wanted", NN, PROCESS, ""),
    ("set-dumpable", NN, PROCESS, ""),
    ("strict-limits", NN, "the engine says at start when the descriptor limit cannot fit global.maxconn", ""),
    ("busy-polling", NN, PROCESS, ""),
    ("noepoll", NN, "the driver is chosen with engine --driver auto|uring|epoll", ""),
    ("nopoll", NN, "the driver is chosen with engine --driver auto|uring|epoll", ""),
    ("nosplice", NN, PROCESS, ""),
    ("noreuseport", NN, "the engine needs SO_REUSEPORT: one listener per core", ""),
    ("hard-stop-after", NC, "the engine finishes in-flight requests on SIGTERM before it exits", "bound the wait with systemd's TimeoutStopSec="),
    ("grace", NC, "the engine stops accepting at once on SIGTERM, then finishes in-flight requests", "none needed"),
    ("lua-load", NC, "Lua scripts: the engine runs no scripts", "do in Moodle or in the engine's own settings what the script did"),
    ("lua-load-per-thread", NC, "Lua scripts: the engine runs no scripts", "do in Moodle or in the engine's own settings what the script did"),
    ("lua-prepend-path", NC, "Lua scripts: the engine runs no scripts", "none needed"),
    ("uid", NC, "numeric user ids", "write user = \"NAME\" in [global]"),
    ("gid", NC, "numeric group ids", "write group = \"NAME\" in [global]"),
    ("setenv", NC, "HAProxy's environment variables", "write the values themselves in lb.toml"),
    ("presetenv", NC, "HAProxy's environment variables", "write the values themselves in lb.toml"),
    ("resetenv", NC, "HAProxy's environment variables", "write the values themselves in lb.toml"),
    ("unsetenv", NC, "HAProxy's environment variables", "write the values themselves in lb.toml"),
    ("log-send-hostname", NC, "syslog header fields", "none: the local syslog daemon adds the host name"),
    ("log-tag", NC, "syslog header fields", "none needed: the engine tags its syslog lines `engine`"),
    ("maxsslconn", NC, "rate and TLS connection limits", "global.maxconn caps client connections, all cores together"),
    ("maxconnrate", NC, "rate limits", "global.maxconn caps client connections; backend.max_queue and the waiting room absorb surges"),
    ("maxsessrate", NC, "rate limits", "global.maxconn caps client connections; backend.max_queue and the waiting room absorb surges"),
    ("maxsslrate", NC, "rate limits", "global.maxconn caps client connections"),
    ("maxpipes", NC, "the engine sizes its splice pipes by the load", "none needed"),
    ("maxzlibmem", NC, "compression", "compress in the web server behind the engine"),
    ("maxcomprate", NC, "compression", "compress in the web server behind the engine"),
    ("maxcompcpuusage", NC, "compression", "compress in the web server behind the engine"),
    ("stick-table", NC, "stick tables", STICK),
    ("stick on", NC, "stick tables", STICK),
    ("stick match", NC, "stick tables", STICK),
    ("stick store-request", NC, "stick tables", STICK),
    ("stick store-response", NC, "stick tables", STICK),
    ("tcp-request", NC, "TCP-level rules", RULES),
    ("tcp-response", NC, "TCP-level rules", RULES),
    ("http-response", NC, "response rules", RULES),
    ("http-after-response", NC, "response rules", RULES),
    ("http-request", NC, "HTTP request rules other than set-header, add-header and redirect scheme https", RULES),
    ("capture", NC, "captures for the log", "the access log has HAProxy's httplog fields; [log] format = \"json\" for the same as JSON"),
    ("declare capture", NC, "captures for the log", "the access log has HAProxy's httplog fields"),
    ("log-format", NC, "custom log formats", "[log] format = \"httplog\" (HAProxy's httplog fields) or \"json\""),
    ("log-format-sd", NC, "custom log formats", "[log] format = \"httplog\" or \"json\""),
    ("error-log-format", NC, "custom log formats", "[log] format = \"httplog\" or \"json\""),
    ("option tcplog", NC, "TCP logs: the engine logs HTTP requests", "[log] format = \"httplog\""),
    ("option logasap", NC, "the engine logs each request once it ends", "none needed: long downloads show in the log when they end"),
    ("option log-separate-errors", NC, "log levels per outcome", "none: each line has its status and termination state"),
    ("option dontlog-normal", NC, "logging failures only", "none: the engine logs every request"),
    ("option http-ignore-probes", NC, "the engine logs connections that sent nothing unless dontlognull", "[log] dontlognull = true"),
    ("unique-id-format", NC, "request ids", "add a request id in the web server behind the engine (Apache's mod_unique_id)"),
    ("unique-id-header", NC, "request ids", "add a request id in the web server behind the engine (Apache's mod_unique_id)"),
    ("compression", NC, "compression", "compress in the web server behind the engine (mod_deflate, or Moodle's own)"),
    ("monitor-uri", NC, "a monitoring URI answered by the load balancer", "probe the stats endpoint (global.stats, GET /stats.json)"),
    ("monitor", NC, "a monitoring URI answered by the load balancer", "probe the stats endpoint (global.stats, GET /stats.json)"),
    ("monitor-net", NC, "a monitoring network", "probe the stats endpoint (global.stats, GET /stats.json)"),
    ("errorloc", NC, "error redirects", "backend.errorfile_503 answers when no server can; other errors are the engine's own short pages"),
    ("errorloc302", NC, "error redirects", "backend.errorfile_503 answers when no server can"),
    ("errorloc303", NC, "error redirects", "backend.errorfile_503 answers when no server can"),
    ("errorfiles", NC, "http-errors sections", "backend.errorfile_503"),
    ("http-error", NC, "custom error responses", "backend.errorfile_503"),
    ("email-alert", NC, "mail alerts", "alert from the metrics (GET /metrics: engine_server_up)"),
    ("server-template", NC, "server templates (DNS service discovery)", "write one [[backend.server]] per server, with its IP address"),
    ("hash-type", NC, "hash-based balancing", "balance = \"roundrobin\" or \"leastconn\""),
    ("hash-balance-factor", NC, "hash-based balancing", "balance = \"roundrobin\" or \"leastconn\""),
    ("fullconn", NC, "dynamic server limits", "server.maxconn (a fixed limit per server)"),
    ("dispatch", NC, "dispatch addresses", "write the server as a [[backend.server]]"),
    ("force-persist", NC, "conditional persistence", STICK),
    ("ignore-persist", NC, "conditional persistence", STICK),
    ("persist", NC, "RDP persistence", STICK),
    ("appsession", NC, "application-session persistence", "[backend.cookie] mode = \"prefix\" on the application's cookie"),
    ("source", NC, "source addresses", "none: the kernel picks the source address"),
    ("rate-limit", NC, "rate limits", "backend.max_queue and the waiting room absorb surges"),
    ("filter", NC, "filters", NO_COUNTERPART),
    ("option abortonclose", NC, "aborting queued requests whose client left", "none: timeout_queue bounds the wait"),
    ("option allbackups", NC, "using every backup at once", NO_COUNTERPART),
    ("option checkcache", NC, "cache checks on responses", "backend.cookie.nocache marks responses that set the cookie private"),
    ("option http-no-delay", NC, "HAProxy's buffering tuning", NO_COUNTERPART),
    ("option http-restrict-req-hdr-names", NC, "header name filtering", "none: malformed header names are refused with 400"),
    ("option accept-invalid-http-request", NC, "accepting malformed requests", "none: the engine refuses them with 400"),
    ("option accept-invalid-http-response", NC, "accepting malformed responses", "none: the engine answers 502"),
    ("option h1-case-adjust-bogus-client", NC, "header case rewriting", NO_COUNTERPART),
    ("option h1-case-adjust-bogus-server", NC, "header case rewriting", NO_COUNTERPART),
    ("h1-case-adjust", NC, "header case rewriting", NO_COUNTERPART),
    ("h1-case-adjust-file", NC, "header case rewriting", NO_COUNTERPART),
    ("option originalto", NC, "X-Original-To", NO_COUNTERPART),
    ("option tcpka", NC, "TCP keep-alive probes", NO_COUNTERPART),
    ("option clitcpka", NC, "TCP keep-alive probes", NO_COUNTERPART),
    ("option srvtcpka", NC, "TCP keep-alive probes", NO_COUNTERPART),
    ("option tcp-smart-accept", NC, "socket tuning", NO_COUNTERPART),
    ("option tcp-smart-connect", NC, "socket tuning", NO_COUNTERPART),
    ("option nolinger", NC, "socket tuning", NO_COUNTERPART),
    ("option transparent", NC, "transparent proxying", NO_COUNTERPART),
    ("option independent-streams", NC, "HAProxy's timeout accounting", NO_COUNTERPART),
    ("option http-buffer-request", NC, "waiting for the whole body before choosing a server", "none: bodies are streamed"),
    ("option ssl-hello-chk", NC, "non-HTTP health checks", NOT_HTTP_CHECK),
    ("option mysql-check", NC, "non-HTTP health checks", NOT_HTTP_CHECK),
    ("option pgsql-check", NC, "non-HTTP health checks", NOT_HTTP_CHECK),
    ("option redis-check", NC, "non-HTTP health checks", NOT_HTTP_CHECK),
    ("option smtpchk", NC, "non-HTTP health checks", NOT_HTTP_CHECK),
    ("option ldap-check", NC, "non-HTTP health checks", NOT_HTTP_CHECK),
    ("option tcp-check", NC, "non-HTTP health checks", NOT_HTTP_CHECK),
    ("option external-check", NC, "external health checks", NOT_HTTP_CHECK),
    ("option spop-check", NC, "non-HTTP health checks", NOT_HTTP_CHECK),
    ("tcp-check", NC, "non-HTTP health checks", NOT_HTTP_CHECK),
    ("external-check", NC, "external health checks", NOT_HTTP_CHECK),
    ("http-send-name-header", NC, "a header naming the server", NO_COUNTERPART),
    ("max-keep-alive-queue", NC, "HAProxy's keep-alive queueing", NO_COUNTERPART),
    ("retry-on", NC, "retry conditions", "retries: a failed connect is retried on another server, and so is an idempotent request without a byte of response"),
    ("enabled", NC, "proxies disabled at start", "remove the proxy, or keep it"),
    ("disabled", NC, "proxies disabled at start", "remove the proxy, or keep it"),
    ("backlog", NC, "the listen backlog", "net.core.somaxconn (engine check --host says what it needs)"),
    ("userlist", NC, "user lists (HTTP basic authentication)", "none: put authentication in Moodle"),
    ("peers", NC, "peers (stick-table replication)", STICK),
    ("resolvers", NC, "DNS resolvers", "write servers by IP address"),
    ("mailers", NC, "mail alerts", "alert from the metrics (GET /metrics)"),
    ("cache", NC, "HAProxy's cache", NO_COUNTERPART),
    ("program", NC, "programs run by HAProxy", "run them as systemd units"),
    ("http-errors", NC, "custom error responses", "backend.errorfile_503"),
    ("ring", NC, "log rings", "[log] access"),
    ("map", NC, "maps", "write the routing they held as frontends and backends of their own"),
];

/// The verdict on a directive the translation does not handle, from the table; `None`
/// when the importer does not know it.
pub(crate) fn lookup(words: &[String]) -> Option<(Verdict, &'static str, &'static str)> {
    let w0 = words
        .first()
        .map(|w| w.to_ascii_lowercase())
        .unwrap_or_default();
    let w1 = words
        .get(1)
        .map(|w| w.to_ascii_lowercase())
        .unwrap_or_default();
    let two = format!("{w0} {w1}");
    let find = |k: &str| {
        TABLE
            .iter()
            .find(|(key, ..)| *key == k)
            .map(|(_, v, why, instead)| (*v, *why, *instead))
    };
    find(&two).or_else(|| find(&w0)).or_else(|| {
        w0.starts_with("tune.").then_some((
            NC,
            "HAProxy's internal tuning",
            "none: the engine's own limits are in [limits]",
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn finds_two_word_keys_first() {
        assert_eq!(lookup(&w("option redispatch")).map(|v| v.0), Some(NN));
        assert_eq!(lookup(&w("Stats Timeout 30s")).map(|v| v.0), Some(NN));
        assert_eq!(lookup(&w("http-request deny if x")).map(|v| v.0), Some(NC));
        assert_eq!(lookup(&w("tune.maxrewrite 1024")).map(|v| v.0), Some(NC));
        assert_eq!(lookup(&w("frobnicate")), None);
        assert_eq!(lookup(&[]), None);
    }

    #[test]
    fn keys_are_unique() {
        for (i, a) in TABLE.iter().enumerate() {
            assert!(TABLE[..i].iter().all(|b| b.0 != a.0), "{} twice", a.0);
        }
    }
}
