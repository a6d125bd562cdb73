//! Real PHP behind the engine (issue 3): three `php -S` nodes running tools/php, whose
//! file-based sessions are named MoodleSession and kept in a folder per node (so a session
//! lives on one node only). A scripted login, dashboard and quiz submission for many users
//! passes through the engine's two cores with no login loop, in insert mode (SERVERID) and
//! in prefix mode (on MoodleSession); the same script through an insert cookie named
//! MoodleSession (forced past `engine check`) loops, which shows that the script catches
//! it. PHP is required: tests/run.sh installs php-cli; these tests fail without it.

use std::path::Path;
use std::time::Duration;

use engine_tests::php::*;
use engine_tests::*;

both_drivers!(
    php_sessions_through_insert_cookie,
    php_sessions_through_prefix_cookie,
    php_insert_cookie_named_moodlesession_loops,
);

/// The configuration text: frontend `web` on port 0 (the engine picks) to backend `moodle` with the
/// PHP nodes, a health check on the home page (which starts no session), and `cookie` (a `[backend.cookie]` table).
fn php_config(nodes: &[PhpNode], cookie: &str) -> String {
    let mut s = format!(
        "[log]\naccess = \"off\"\n\n[[frontend]]\nname = \"web\"\nbind = [\"127.0.0.1:0\"]\n\
         backend = \"moodle\"\n\n[[backend]]\nname = \"moodle\"\n{cookie}\n\
         [backend.check]\nuri = \"/\"\nhost = \"moodle.test\"\n\
         expect_status = \"200\"\nexpect_string = \"Moodle\"\ninterval = \"500ms\"\n\n",
    );
    for n in nodes {
        s.push_str(&format!(
            "[[backend.server]]\nname = \"{}\"\naddress = \"{}\"\n\n",
            n.name, n.addr
        ));
    }
    s
}

/// After a run: the health check on the PHP home page (`/`, sent in two parts, "Moodle"
/// in the second) has passed on every node, and the health-check thread still answers
/// and still probes.
fn assert_checks_alive(r: &Running) {
    let mut last = String::from("no answer");
    let ok = poll_for(Duration::from_secs(5), || {
        let Some(v) = r.stats() else {
            last = "r.stats() is None: the health-check thread does not answer".into();
            return false;
        };
        last = format!(
            "{:?}",
            v.backends[0]
                .servers
                .iter()
                .map(|s| (&s.name, &s.check))
                .collect::<Vec<_>>()
        );
        v.backends[0].servers.iter().all(|s| {
            s.check.as_ref().is_some_and(|c| {
                c.result.starts_with("passed")
                    && c.status == Some(200)
                    && c.seconds_ago.is_some_and(|a| a < 3.0)
            })
        })
    });
    assert!(
        ok,
        "the health check of every PHP node passes and keeps running: {last}"
    );
    let ans = r.admin("show servers");
    assert!(ans.starts_with("# "), "the admin answers: {ans}");
}

const USERS: usize = 60;

fn php_sessions_through_insert_cookie(driver: DriverChoice) {
    let nodes = php_nodes();
    let text = php_config(&nodes, "[backend.cookie]\nname = \"SERVERID\"\n");
    let r = start(cfg(&text, &[]), driver);
    assert_eq!(r.cores(), 2);
    wait_up(&r, nodes.len());
    let run = run_exam(|| Browser::new(r.addr("web")), "ins", USERS, 6);
    assert_clean_run(&nodes, &run, "ins", USERS);
    assert_checks_alive(&r);
    // Sessions stayed on their node: each node holds one session file per user of its
    // own (the login page's session, renewed at login), none for anyone else.
    for n in &nodes {
        let mine = run.homes.values().filter(|h| **h == n.name).count();
        assert_eq!(n.sessions(), mine, "{}: session files", n.name);
    }
}

fn php_sessions_through_prefix_cookie(driver: DriverChoice) {
    let nodes = php_nodes();
    let text = php_config(
        &nodes,
        "[backend.cookie]\nname = \"MoodleSession\"\nmode = \"prefix\"\n",
    );
    let r = start(cfg(&text, &[]), driver);
    wait_up(&r, nodes.len());
    let run = run_exam(|| Browser::new(r.addr("web")), "pre", USERS, 6);
    assert_clean_run(&nodes, &run, "pre", USERS);
    assert_checks_alive(&r);
    // What the browser holds: MoodleSession=<node>~<PHP's id>.
    let mut b = Browser::new(r.addr("web"));
    b.request("GET", "/login/index.php", None).unwrap();
    let jar = b.cookie_header();
    assert!(
        nodes
            .iter()
            .any(|n| jar.starts_with(&format!("MoodleSession={}~", n.name))),
        "prefix mode: {jar}"
    );
}

fn php_insert_cookie_named_moodlesession_loops(driver: DriverChoice) {
    let nodes = php_nodes();
    let text = php_config(&nodes, "[backend.cookie]\nname = \"MoodleSession\"\n");
    let path = Path::new("/tmp/x/lb.toml");
    // engine check refuses it ...
    let refused = config::load_str(&text, path);
    let diags = match refused {
        Ok(_) => panic!("an insert cookie named MoodleSession must be refused"),
        Err(d) => d
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n"),
    };
    assert!(diags.contains("MoodleSession"), "{diags}");
    // ... forced past it, the engine runs, and every student loops.
    let forced = config::load_str_with(&text, path, &config::LoadOptions { force: true })
        .unwrap_or_else(|d| panic!("forced: {d:?}"));
    let r = start(forced.config, driver);
    wait_up(&r, nodes.len());
    let users = 12;
    let run = run_exam(|| Browser::new(r.addr("web")), "loop", users, 4);
    assert!(
        run.failures.is_empty(),
        "the script itself works: {:?}",
        run.failures
    );
    assert_eq!(
        run.loops.len(),
        users,
        "with the persistence cookie named like PHP's session cookie, every login loops \
         (the script must catch it); finished: {:?}",
        run.homes
    );
    for n in &nodes {
        assert!(
            n.submissions().iter().all(|(u, _)| !u.starts_with("loop")),
            "{}: no one could submit",
            n.name
        );
    }
}
