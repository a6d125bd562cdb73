//! The stats page and /metrics, rendered from a [`StatsView`].

use std::fmt::Write as _;

use crate::shared::view::{BackendView, ServerView, StatsView};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The page an operator reads at a glance: one row per server, its state in colour.
pub fn render_html(v: &StatsView) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>engine stats</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 2em; min-width: 60em; }}
th, td {{ padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: right; }}
th {{ background: #f2f2f2; }} td.l, th.l {{ text-align: left; }}
.state {{ font-weight: bold; border-radius: 3px; padding: 1px 6px; color: #fff; }}
.UP {{ background: #2e8b57; }} .DOWN {{ background: #c0392b; }} .MAINT {{ background: #7f8c8d; }} .DRAIN {{ background: #e67e22; }}
.meta {{ color: #555; }}
</style></head><body>
<h1>engine</h1>
<p class="meta">version {} &middot; uptime {}s &middot; {} cores &middot; driver {} &middot; {} client connections ({} HTTP/2, {} HTTP/2 streams since start)</p>
"#,
        esc(&v.version),
        v.uptime_seconds,
        v.cores,
        esc(&v.driver),
        v.connections,
        v.http2.connections,
        v.http2.streams_total
    );
    let fronts: Vec<String> = v
        .frontends
        .iter()
        .map(|f| {
            if f.tls {
                format!(
                    "{} (TLS, {} failed handshakes)",
                    esc(&f.name),
                    f.tls_handshake_failures
                )
            } else {
                esc(&f.name)
            }
        })
        .collect();
    let _ = writeln!(
        h,
        "<p class=\"meta\">frontends: {}</p>",
        fronts.join(" &middot; ")
    );
    for b in &v.backends {
        backend_table(&mut h, b);
    }
    h.push_str("<p class=\"meta\">Also: <a href=\"/stats.json\">/stats.json</a> &middot; <a href=\"/metrics\">/metrics</a></p>\n</body></html>\n");
    h
}

/// One backend's heading and its table of servers.
fn backend_table(h: &mut String, b: &BackendView) {
    {
        let _ = write!(
            h,
            "<h2>backend {}</h2>\n<p class=\"meta\">{} &middot; {} queued &middot; queue wait p50 {} ms, p99 {} ms{}</p>\n<table class=\"servers\" data-backend=\"{}\">\n<tr><th class=\"l\">server</th><th class=\"l\">address</th><th class=\"l\">state</th><th>weight</th><th>active</th><th>queued</th><th>total</th><th>5xx</th><th>conn. failures</th><th>p50 ms</th><th>p99 ms</th><th class=\"l\">last check</th></tr>\n",
            esc(&b.name),
            esc(&b.balance),
            b.queued,
            b.queue_p50_ms,
            b.queue_p99_ms,
            if b.panic {
                " &middot; <b>PANIC</b>: below panic_below, every server that accepts connections takes new clients"
            } else {
                ""
            },
            esc(&b.name)
        );
        for s in &b.servers {
            server_row(h, s);
        }
        h.push_str("</table>\n");
    }
}

/// One server's row.
fn server_row(h: &mut String, s: &ServerView) {
    {
        let mut check = match &s.check {
            None => "no check".to_string(),
            Some(c) => match c.seconds_ago {
                Some(a) => format!("{} ({a}s ago)", c.result),
                None => c.result.clone(),
            },
        };
        if s.checks_vetoed > 0 {
            check.push_str(&format!(
                "; {} timeouts not counted (live traffic)",
                s.checks_vetoed
            ));
        }
        if s.slow {
            check.push_str("; slow: fewer new clients");
        }
        let _ = writeln!(
                h,
                "<tr class=\"server\"><td class=\"l\">{}{}</td><td class=\"l\">{}</td><td class=\"l\"><span class=\"state {}\">{}</span></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td></tr>",
                esc(&s.name),
                if s.backup { " (backup)" } else { "" },
                esc(&s.address),
                esc(&s.state),
                esc(&s.state),
                s.weight,
                s.active,
                s.queued,
                s.total,
                s.responses_5xx,
                s.failures,
                s.p50_ms,
                s.p99_ms,
                esc(&check)
            );
    }
}

fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text format, with Prometheus's naming conventions (base units, `_total`
/// for counters).
pub fn render_metrics(v: &StatsView) -> String {
    let mut m = String::new();
    engine_metrics(&mut m, v);
    server_metrics(&mut m, v);
    m
}

/// The engine's, its frontends' and its backends' series.
fn engine_metrics(m: &mut String, v: &StatsView) {
    let _ = writeln!(
        m,
        "# HELP engine_info Build and runtime information.\n# TYPE engine_info gauge"
    );
    let _ = writeln!(
        m,
        "engine_info{{version=\"{}\",driver=\"{}\"}} 1",
        label(&v.version),
        label(&v.driver)
    );
    let _ = writeln!(m, "# HELP engine_uptime_seconds Seconds since the engine started.\n# TYPE engine_uptime_seconds gauge\nengine_uptime_seconds {}", v.uptime_seconds);
    let _ = writeln!(
        m,
        "# HELP engine_cores Worker cores.\n# TYPE engine_cores gauge\nengine_cores {}",
        v.cores
    );
    let _ = writeln!(m, "# HELP engine_client_connections Client connections open now.\n# TYPE engine_client_connections gauge\nengine_client_connections {}", v.connections);
    let _ = writeln!(m, "# HELP engine_http2_connections HTTP/2 client connections open now.\n# TYPE engine_http2_connections gauge\nengine_http2_connections {}", v.http2.connections);
    let _ = writeln!(m, "# HELP engine_http2_connections_total HTTP/2 client connections since start.\n# TYPE engine_http2_connections_total counter\nengine_http2_connections_total {}", v.http2.connections_total);
    let _ = writeln!(m, "# HELP engine_http2_streams_total HTTP/2 streams (requests) since start.\n# TYPE engine_http2_streams_total counter\nengine_http2_streams_total {}", v.http2.streams_total);
    let _ = writeln!(m, "# HELP engine_frontend_tls_handshake_failures_total Failed TLS handshakes.\n# TYPE engine_frontend_tls_handshake_failures_total counter");
    for f in v.frontends.iter().filter(|f| f.tls) {
        let _ = writeln!(
            m,
            "engine_frontend_tls_handshake_failures_total{{frontend=\"{}\"}} {}",
            label(&f.name),
            f.tls_handshake_failures
        );
    }
    let _ = writeln!(m, "# HELP engine_backend_queued_requests Requests waiting for a server slot.\n# TYPE engine_backend_queued_requests gauge");
    for b in &v.backends {
        let _ = writeln!(
            m,
            "engine_backend_queued_requests{{backend=\"{}\"}} {}",
            label(&b.name),
            b.queued
        );
    }
    let _ = writeln!(m, "# HELP engine_backend_panic 1 while the backend is below panic_below.\n# TYPE engine_backend_panic gauge");
    for b in &v.backends {
        let _ = writeln!(
            m,
            "engine_backend_panic{{backend=\"{}\"}} {}",
            label(&b.name),
            b.panic as u8
        );
    }
}

type Getter = fn(&ServerView) -> String;

/// One series per server: name, type, help, value.
const SERIES: [(&str, &str, &str, Getter); 11] = [
    (
        "engine_server_check_timeouts_vetoed_total",
        "counter",
        "Check timeouts not counted: live traffic showed the server alive.",
        |s| s.checks_vetoed.to_string(),
    ),
    (
        "engine_server_slow",
        "gauge",
        "1 while the server is slow and gets fewer new clients.",
        |s| (s.slow as u8).to_string(),
    ),
    (
        "engine_server_up",
        "gauge",
        "1 when the server takes traffic (UP or DRAIN).",
        |s| {
            if s.state == "UP" || s.state == "DRAIN" {
                "1".into()
            } else {
                "0".into()
            }
        },
    ),
    ("engine_server_weight", "gauge", "Current weight.", |s| {
        s.weight.to_string()
    }),
    (
        "engine_server_active_requests",
        "gauge",
        "Requests in flight on the server.",
        |s| s.active.to_string(),
    ),
    (
        "engine_server_queued_requests",
        "gauge",
        "Requests waiting for this server.",
        |s| s.queued.to_string(),
    ),
    (
        "engine_server_requests_total",
        "counter",
        "Requests sent to the server.",
        |s| s.total.to_string(),
    ),
    (
        "engine_server_responses_5xx_total",
        "counter",
        "5xx responses from the server.",
        |s| s.responses_5xx.to_string(),
    ),
    (
        "engine_server_connect_failures_total",
        "counter",
        "Failed connections to the server.",
        |s| s.failures.to_string(),
    ),
    (
        "engine_server_response_time_p50_seconds",
        "gauge",
        "Median response time.",
        |s| format!("{}", s.p50_ms / 1000.0),
    ),
    (
        "engine_server_response_time_p99_seconds",
        "gauge",
        "99th percentile response time.",
        |s| format!("{}", s.p99_ms / 1000.0),
    ),
];

/// Every server's series, then its state.
fn server_metrics(m: &mut String, v: &StatsView) {
    for (name, kind, help, get) in SERIES {
        let _ = writeln!(m, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for b in &v.backends {
            for s in &b.servers {
                let _ = writeln!(
                    m,
                    "{name}{{backend=\"{}\",server=\"{}\"}} {}",
                    label(&b.name),
                    label(&s.name),
                    get(s)
                );
            }
        }
    }
    let _ = writeln!(m, "# HELP engine_server_state Server state (1 for the current one).\n# TYPE engine_server_state gauge");
    for b in &v.backends {
        for s in &b.servers {
            for st in ["UP", "DOWN", "MAINT", "DRAIN"] {
                let _ = writeln!(
                    m,
                    "engine_server_state{{backend=\"{}\",server=\"{}\",state=\"{st}\"}} {}",
                    label(&b.name),
                    label(&s.name),
                    (s.state == st) as u8
                );
            }
        }
    }
}
