//! Headless Chromium over HTTPS through the engine (issue 15), both drivers: it loads the
//! origin's quiz page, which pulls 40 stylesheets and scripts, over HTTP/2 (the page and
//! every asset report `nextHopProtocol` "h2"), then logs in from the page's script (the
//! login's redirect to the dashboard followed with the session and persistence cookies).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use engine_tests::tls::{certs, require_tools};
use engine_tests::*;

both_drivers!(chromium_loads_a_quiz_page_of_40_assets_over_h2_and_logs_in);

/// Chromium's DOM of `url` once its scripts ran (virtual time lets the page's fetches
/// finish before the dump).
fn chromium_dom(url: &str) -> String {
    let profile = tmpdir("chromium-h2");
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
            "--ignore-certificate-errors",
            "--virtual-time-budget=10000",
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
    let st = wait_exit(&mut child, Duration::from_secs(90));
    let dom = reader.join().unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    assert!(st.success(), "chromium exit status {st:?}");
    dom
}

fn chromium_loads_a_quiz_page_of_40_assets_over_h2_and_logs_in(driver: DriverChoice) {
    require_tools();
    let o = origins(2);
    let text = format!(
        "[log]\naccess = \"off\"\n\
         [[frontend]]\nname = \"https\"\nbind = [\"127.0.0.1:0\"]\nbackend = \"moodle\"\n\
         tls = {{ certs = [\"{}\"] }}\n\
         [[backend]]\nname = \"moodle\"\n[backend.cookie]\nname = \"SERVERID\"\n\
         [[backend.server]]\nname = \"s1\"\naddress = \"{}\"\ncookie = \"s1\"\n\
         [[backend.server]]\nname = \"s2\"\naddress = \"{}\"\ncookie = \"s2\"\n",
        certs().default.display(),
        o[0].addr(),
        o[1].addr()
    );
    let r = start(cfg(&text, &[]), driver);
    let url = format!(
        "https://localhost:{}/mod/quiz/view.php",
        r.addr("https").port()
    );
    let dom = chromium_dom(&url);
    let result = dom
        .split("<pre id=\"result\">")
        .nth(1)
        .and_then(|s| s.split("</pre>").next())
        .unwrap_or_else(|| panic!("the page's script reported nothing:\n{dom}"));
    assert_eq!(result, "nav=h2 assets=40 h2=40 login=ok", "{dom}");
    // The cores report their counts about twice a second.
    wait_until(Duration::from_secs(5), "42 streams or more counted", || {
        r.stats().unwrap().http2.streams_total >= 42
    });
}
