//! The stats endpoint (issue 5, point 4; the spec's "Stats endpoint") on `global.stats`:
//! `/stats.json` parsed with serde_json (names, addresses, states, weights, active, queued
//! and total requests merged from both cores, p50/p99 from the cores' histograms);
//! `/metrics` parsed by Python's prometheus_client and held to Prometheus's naming
//! conventions; the HTML page rendered in headless Chromium with one row per server.

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use engine_tests::*;
use serde_json::Value;

both_drivers!(json_reports_every_server, json_active_queued_and_latency);

const CHECK: &str = "[backend.check]\nuri = \"/health\"\nexpect_status = \"200\"\nexpect_string = \"OK\"\ninterval = \"200ms\"\nrise = 2\nfall = 2\ntimeout = \"200ms\"\n";

fn with_stats(web: Web) -> config::Config {
    let text = web.tail("[global]\nstats = \"127.0.0.1:0\"\n").text();
    cfg(&text, &[])
}

fn stats_addr(r: &Running) -> SocketAddr {
    r.stats_addr().expect("global.stats set: stats_addr()")
}

/// GET on the stats endpoint: (status, content type, body).
fn fetch(r: &Running, path: &str) -> (u16, String, String) {
    let resp = tools::client::get(stats_addr(r), path)
        .unwrap_or_else(|e| panic!("GET {path} on the stats endpoint: {e}"));
    (
        resp.status,
        resp.header("content-type").unwrap_or("").to_string(),
        resp.text(),
    )
}

fn json(r: &Running) -> Value {
    let (st, ct, body) = fetch(r, "/stats.json");
    assert_eq!(st, 200, "/stats.json: {body}");
    assert!(
        ct.starts_with("application/json"),
        "/stats.json Content-Type: {ct}"
    );
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/stats.json parses: {e}\n{body}"))
}

/// The server `name` of backend `backend` in a /stats.json document.
fn server<'a>(v: &'a Value, backend: &str, name: &str) -> &'a Value {
    let b = v["backends"]
        .as_array()
        .expect("backends[]")
        .iter()
        .find(|b| b["name"] == backend)
        .unwrap_or_else(|| panic!("backend {backend} in {v}"));
    b["servers"]
        .as_array()
        .expect("backends[].servers[]")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("server {backend}/{name} in {v}"))
}

fn num(v: &Value, field: &str) -> f64 {
    v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is a number in {v}"))
}

/// `n` GETs of `path`, each on a new connection (spread over both cores); X-Node -> count.
fn spread(addr: SocketAddr, n: usize, path: &str) -> HashMap<String, u64> {
    let mut m = HashMap::new();
    for i in 0..n {
        let resp = tools::client::get(addr, path).unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(resp.status, 200, "request {i}");
        *m.entry(resp.header("x-node").unwrap_or("?").to_string())
            .or_insert(0) += 1;
    }
    m
}

fn json_reports_every_server(driver: DriverChoice) {
    let o = origins(3);
    let r = start(
        with_stats(
            Web::new(&[&o[0], &o[1], &o[2]])
                .backend(CHECK)
                .server_extra(2, "weight = 2"),
        ),
        driver,
    );
    let v = json(&r);
    let backends = v["backends"].as_array().expect("backends[]");
    assert_eq!(backends.len(), 1, "{v}");
    assert_eq!(backends[0]["name"], "app");
    let servers = backends[0]["servers"].as_array().expect("servers[]");
    assert_eq!(servers.len(), 3, "{v}");
    for (i, org) in o.iter().enumerate() {
        let s = server(&v, "app", &format!("s{}", i + 1));
        assert_eq!(s["address"], org.addr().to_string(), "{s}");
        assert_eq!(s["state"], "UP", "{s}");
        assert_eq!(num(s, "weight"), if i == 2 { 2.0 } else { 1.0 }, "{s}");
        for f in ["active", "queued", "total"] {
            assert_eq!(num(s, f), 0.0, "{f} before any traffic: {s}");
        }
    }

    // Totals merged from both cores.
    let m = spread(r.addr("web"), 40, "/");
    assert_eq!(m.values().sum::<u64>(), 40);
    let mut last = Value::Null;
    let ok = poll_for(Duration::from_secs(5), || {
        last = json(&r);
        (1..=3).all(|i| {
            let n = format!("s{i}");
            num(server(&last, "app", &n), "total") as u64 == m.get(&n).copied().unwrap_or(0)
        })
    });
    assert!(ok, "totals {m:?} in /stats.json within 5s: {last}");

    // Admin changes show at once.
    assert!(!r.admin("disable server app/s2").starts_with("error:"));
    assert!(!r.admin("set weight app/s3 5").starts_with("error:"));
    let v = json(&r);
    assert_eq!(server(&v, "app", "s2")["state"], "MAINT");
    assert_eq!(num(server(&v, "app", "s3"), "weight"), 5.0);
    // A failing health check shows as DOWN.
    o[0].set_healthy(false);
    wait_until(Duration::from_secs(5), "s1 DOWN in /stats.json", || {
        server(&json(&r), "app", "s1")["state"] == "DOWN"
    });
}

fn json_active_queued_and_latency(driver: DriverChoice) {
    let o = origins(2);
    let r = start(
        with_stats(Web::new(&[&o[0], &o[1]]).server_extra(0, "maxconn = 1")),
        driver,
    );
    let addr = r.addr("web");

    // p50 / p99 from the cores' histograms: 24 requests of about 150 ms from 4 clients.
    std::thread::scope(|sc| {
        for _ in 0..4 {
            sc.spawn(|| spread(addr, 6, "/slow?ms=150"));
        }
    });
    let mut last = Value::Null;
    let ok = poll_for(Duration::from_secs(5), || {
        last = json(&r);
        num(server(&last, "app", "s1"), "total") + num(server(&last, "app", "s2"), "total") == 24.0
    });
    assert!(ok, "24 requests counted: {last}");
    for n in ["s1", "s2"] {
        let s = server(&last, "app", n);
        let (p50, p99) = (num(s, "p50_ms"), num(s, "p99_ms"));
        assert!(
            (140.0..=700.0).contains(&p50),
            "{n}: p50 of ~150 ms requests: {p50} ms: {s}"
        );
        assert!(
            p99 >= p50 && p99 <= 2000.0,
            "{n}: p99 {p99} ms, p50 {p50} ms: {s}"
        );
    }

    // In flight: 4 slow requests on 4 connections (both cores), all cores together.
    in_flight(&r, 4, &["s1", "s2"], 4.0, 0.0);
    drop(r);

    // One server taking one request at a time (maxconn = 1, all cores together): of 3
    // requests, 1 active and 2 queued, on the server or on its backend.
    let r = start(
        with_stats(Web::new(&[&o[0]]).server_extra(0, "maxconn = 1")),
        driver,
    );
    in_flight(&r, 3, &["s1"], 1.0, 2.0);
}

/// Sends `n` requests of 3 s at once; /stats.json must show `active` and `queued`
/// (servers `names` together; queued is the servers' or their backend's) while they run,
/// and active back to 0 after.
fn in_flight(r: &Running, n: usize, names: &[&str], active: f64, queued: f64) {
    let addr = r.addr("web");
    let sum =
        |v: &Value, f: &str| -> f64 { names.iter().map(|s| num(server(v, "app", s), f)).sum() };
    std::thread::scope(|sc| {
        let hs: Vec<_> = (0..n)
            .map(|_| {
                sc.spawn(|| {
                    let resp = tools::client::get(addr, "/slow?ms=3000").expect("slow request");
                    assert_eq!(resp.status, 200);
                })
            })
            .collect();
        let mut last = Value::Null;
        let ok = poll_for(Duration::from_millis(2800), || {
            last = json(r);
            let q = sum(&last, "queued").max(last["backends"][0]["queued"].as_f64().unwrap_or(0.0));
            sum(&last, "active") == active && q == queued
        });
        assert!(
            ok,
            "{n} requests in flight: active {active}, queued {queued} in /stats.json: {last}"
        );
        for h in hs {
            h.join().unwrap();
        }
    });
    wait_until(Duration::from_secs(5), "active back to 0", || {
        let v = json(r);
        sum(&v, "active") == 0.0 && sum(&v, "queued") == 0.0
    });
}

/// prometheus_client's view of /metrics: one JSON object per family.
fn parse_metrics(text: &str) -> Vec<Value> {
    let script = workspace().join("tests/scripts/prom_parse.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect(
            "python3 is needed to parse /metrics with prometheus_client (tests/run.sh installs it)",
        );
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().expect("python3");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() != Some(2),
        "Python's prometheus_client is missing (python3 -m pip install prometheus_client): {err}"
    );
    assert!(
        out.status.success(),
        "prometheus_client refuses /metrics: {err}\n--- /metrics ---\n{text}"
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("the parser's JSON")
}

#[test]
fn metrics_parse_with_prometheus_client() {
    let o = origins(2);
    let r = start(
        with_stats(Web::new(&[&o[0], &o[1]]).backend(CHECK)),
        DriverChoice::Auto,
    );
    let m = spread(r.addr("web"), 20, "/slow?ms=150");
    wait_until(Duration::from_secs(5), "20 requests counted", || {
        let v = json(&r);
        num(server(&v, "app", "s1"), "total") + num(server(&v, "app", "s2"), "total") == 20.0
    });
    assert!(!r.admin("disable server app/s2").starts_with("error:"));

    let (st, ct, text) = fetch(&r, "/metrics");
    assert_eq!(st, 200);
    assert!(
        ct.starts_with("text/plain") && ct.contains("version=0.0.4"),
        "the Prometheus text format's Content-Type: {ct}"
    );
    let fams = parse_metrics(&text);
    assert!(!fams.is_empty(), "metric families in:\n{text}");

    // Prometheus's naming conventions.
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut series = std::collections::HashSet::new();
    for f in &fams {
        let name = f["name"].as_str().unwrap();
        let ty = f["type"].as_str().unwrap();
        assert!(valid_name(name), "metric name {name:?}");
        assert!(
            name.starts_with("engine_"),
            "{name}: one application prefix"
        );
        assert_ne!(ty, "unknown", "{name} has a # TYPE");
        assert!(
            !f["documentation"].as_str().unwrap_or("").is_empty(),
            "{name} has a # HELP"
        );
        for bad in ["_ms", "millisecond", "_micro", "_kb", "_mb", "percent"] {
            assert!(
                !name.contains(bad),
                "{name}: base units (seconds, bytes, ratios), not {bad}"
            );
        }
        if ty != "counter" {
            assert!(
                !name.ends_with("_total"),
                "{name}: only counters end in _total ({ty})"
            );
        }
        for s in f["samples"].as_array().unwrap() {
            let sn = s["name"].as_str().unwrap();
            if ty == "counter" {
                assert!(
                    sn.ends_with("_total") || sn.ends_with("_created"),
                    "counter sample {sn} ends in _total"
                );
            }
            let labels = s["labels"].as_object().unwrap();
            for l in labels.keys() {
                assert!(
                    valid_name(l) && !l.contains(':') && !l.starts_with("__"),
                    "{sn}: label name {l:?}"
                );
            }
            let mut key: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            key.sort();
            assert!(
                series.insert(format!("{sn}{{{}}}", key.join(","))),
                "{sn}{labels:?} appears twice"
            );
        }
    }

    // The values.
    let sample = |name: &str, server: &str| -> f64 {
        fams.iter()
            .flat_map(|f| f["samples"].as_array().unwrap().iter())
            .find(|s| {
                s["name"] == name
                    && s["labels"]["backend"] == "app"
                    && s["labels"]["server"] == server
            })
            .unwrap_or_else(|| panic!("{name}{{backend=\"app\",server=\"{server}\"}} in:\n{text}"))
            ["value"]
            .as_f64()
            .unwrap_or_else(|| panic!("{name} for {server} is a number"))
    };
    let fam_type = |name: &str| -> String {
        fams.iter()
            .find(|f| {
                f["samples"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s["name"] == name)
            })
            .map(|f| f["type"].as_str().unwrap().to_string())
            .unwrap_or_default()
    };
    assert_eq!(sample("engine_server_up", "s1"), 1.0);
    assert_eq!(sample("engine_server_up", "s2"), 0.0, "s2 in MAINT");
    assert_eq!(fam_type("engine_server_up"), "gauge");
    assert_eq!(fam_type("engine_server_requests_total"), "counter");
    for s in ["s1", "s2"] {
        assert_eq!(
            sample("engine_server_requests_total", s),
            m.get(s).copied().unwrap_or(0) as f64,
            "requests to {s}: {m:?}"
        );
        let p99 = sample("engine_server_response_time_p99_seconds", s);
        assert!(
            (0.14..=2.0).contains(&p99),
            "{s}: p99 of ~150 ms requests in seconds: {p99}"
        );
    }
    assert_eq!(fam_type("engine_server_response_time_p99_seconds"), "gauge");
}

/// Runs headless Chromium on `url` and returns the DOM it rendered.
fn chromium_dom(url: &str) -> String {
    let profile = tmpdir("chromium");
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("headless Chromium is needed (tests/run.sh installs it: apt-get install chromium)");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let st = wait_exit(&mut child, Duration::from_secs(60));
    let dom = reader.join().unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    assert!(st.success(), "chromium exit status {st:?}");
    dom
}

#[test]
fn html_page_renders_in_chromium() {
    let o = origins(3);
    let other = [Origin::start("o1").unwrap(), Origin::start("o2").unwrap()];
    let text = format!(
        "[global]\nstats = \"127.0.0.1:0\"\n[log]\naccess = \"off\"\n\
         [[frontend]]\nname = \"web\"\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
         [[frontend]]\nname = \"web2\"\nbind = [\"127.0.0.1:0\"]\nbackend = \"other\"\n\
         [[backend]]\nname = \"app\"\n{CHECK}\n\
         [[backend.server]]\nname = \"s1\"\naddress = \"{}\"\n\
         [[backend.server]]\nname = \"s2\"\naddress = \"{}\"\n\
         [[backend.server]]\nname = \"s3\"\naddress = \"{}\"\n\
         [[backend]]\nname = \"other\"\n\
         [[backend.server]]\nname = \"o1\"\naddress = \"{}\"\n\
         [[backend.server]]\nname = \"o2\"\naddress = \"{}\"\n",
        o[0].addr(),
        o[1].addr(),
        o[2].addr(),
        other[0].addr(),
        other[1].addr()
    );
    let r = start(cfg(&text, &[]), DriverChoice::Auto);
    spread(r.addr("web"), 12, "/");
    spread(r.addr("web2"), 4, "/");
    assert!(!r.admin("disable server app/s2").starts_with("error:"));
    o[2].set_healthy(false);
    wait_until(Duration::from_secs(5), "s3 DOWN", || {
        server(&json(&r), "app", "s3")["state"] == "DOWN"
    });
    wait_until(Duration::from_secs(5), "totals reported", || {
        let v = json(&r);
        ["s1", "s3"]
            .iter()
            .map(|n| num(server(&v, "app", n), "total"))
            .sum::<f64>()
            >= 8.0
    });
    let v = json(&r);

    let dom = chromium_dom(&format!("http://{}/", stats_addr(&r)));
    assert!(
        dom.contains("<table"),
        "a table in the rendered page:\n{dom}"
    );
    let rows: Vec<&str> = dom.split("<tr class=\"server\"").skip(1).collect();
    assert_eq!(
        rows.len(),
        5,
        "one <tr class=\"server\"> per server (3 + 2):\n{dom}"
    );
    let row = |name: &str| -> &str {
        let r = rows
            .iter()
            .find(|r| {
                let end = r.find("</tr>").unwrap_or(r.len());
                r[..end].contains(&format!(">{name}<")) || r[..end].contains(&format!(">{name} "))
            })
            .unwrap_or_else(|| panic!("a row for {name}:\n{dom}"));
        &r[..r.find("</tr>").unwrap_or(r.len())]
    };
    for (b, n, state) in [
        ("app", "s1", "UP"),
        ("app", "s2", "MAINT"),
        ("app", "s3", "DOWN"),
        ("other", "o1", "UP"),
        ("other", "o2", "UP"),
    ] {
        let rw = row(n);
        assert!(rw.contains(state), "{n}'s row shows {state}: {rw}");
        let s = server(&v, b, n);
        assert!(
            rw.contains(&s["address"].as_str().unwrap().to_string()),
            "{n}'s row shows its address: {rw}"
        );
        if let Some(res) = s["check"]["result"].as_str() {
            assert!(
                rw.contains(res),
                "{n}'s row shows its last check {res:?}: {rw}"
            );
        }
    }
    // Traffic and latency columns.
    let lower = dom.to_lowercase();
    for col in ["active", "queued", "total", "p50", "p99", "check"] {
        assert!(lower.contains(col), "a {col} column:\n{dom}");
    }
    // State in colour: each state's element carries a class the style sheet colours.
    let style = dom
        .split("<style")
        .nth(1)
        .and_then(|s| s.split("</style>").next())
        .unwrap_or_else(|| panic!("a style sheet:\n{dom}"));
    let mut colours = Vec::new();
    for state in ["UP", "MAINT", "DOWN"] {
        let rw = row(match state {
            "UP" => "s1",
            "MAINT" => "s2",
            _ => "s3",
        });
        assert!(
            rw.contains(&format!("class=\"state {state}\""))
                || rw.contains(&format!(" {state}\""))
                || rw.contains(&format!("\"{state}\"")),
            "{state}: the state's element has a class naming it: {rw}"
        );
        let at = style
            .find(&format!(".{state}"))
            .unwrap_or_else(|| panic!("a style rule for .{state}: {style}"));
        let rule = &style[at..];
        let rule = &rule[..rule.find('}').unwrap_or(rule.len())];
        assert!(
            rule.contains("background") || rule.contains("color"),
            ".{state} sets a colour: {rule}"
        );
        colours.push(
            rule.split_once('{')
                .map(|x| x.1)
                .unwrap_or("")
                .trim()
                .to_string(),
        );
    }
    colours.sort();
    colours.dedup();
    assert_eq!(
        colours.len(),
        3,
        "UP, MAINT, DOWN in different colours: {colours:?}"
    );
    // And the stats page answers 404 elsewhere.
    assert_eq!(fetch(&r, "/nope").0, 404);
}
