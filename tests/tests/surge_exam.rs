//! The exam under a surge (issue 3): 2,000 students logging in and submitting a quiz
//! through 2 cores to three nodes with node-local sessions, with no login loop, no lost
//! or doubled submission, and no node ever over its maxconn.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use engine_tests::*;

both_drivers!(two_thousand_students);

// ---------------------------------------------------------------- the exam

const STUDENTS: usize = 2000;
const LABS: usize = 24;
const MAXCONN: u64 = 6;

fn two_thousand_students(driver: DriverChoice) {
    let o = origins(3);
    let extra = format!("maxconn = {MAXCONN}");
    let r = start(
        Web::new(&[&o[0], &o[1], &o[2]])
            .backend("[backend.cookie]\nname = \"SERVERID\"\n")
            .server_extra(0, &extra)
            .server_extra(1, &extra)
            .server_extra(2, &extra)
            .config(),
        driver,
    );
    let addr = r.addr("web");
    let next = AtomicUsize::new(0);
    let homes = Mutex::new(HashMap::<String, String>::new());
    let loops = Mutex::new(Vec::new());
    let failures = Mutex::new(Vec::new());
    let t0 = Instant::now();
    std::thread::scope(|sc| {
        for _ in 0..LABS {
            let (next, homes, loops, failures) = (&next, &homes, &loops, &failures);
            sc.spawn(move || {
                // A lab machine: one keep-alive connection, a fresh cookie jar per student.
                let mut b = Browser::new(addr);
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= STUDENTS || t0.elapsed() > Duration::from_secs(40) {
                        break;
                    }
                    b.jar.clear();
                    let user = format!("student{i:04}");
                    match exam(&mut b, &user, &format!("a{i}")) {
                        Ok(Outcome::Done(home)) => {
                            homes.lock().unwrap().insert(user, home);
                        }
                        Ok(Outcome::Loop(m)) => loops.lock().unwrap().push(m),
                        Err(m) => {
                            failures.lock().unwrap().push(m);
                            b.conn = None;
                        }
                    }
                }
            });
        }
    });
    let took = t0.elapsed();
    let loops = loops.into_inner().unwrap();
    let failures = failures.into_inner().unwrap();
    let homes = homes.into_inner().unwrap();
    assert!(
        loops.is_empty(),
        "{} login loop(s): {:?}",
        loops.len(),
        &loops[..loops.len().min(10)]
    );
    assert!(
        failures.is_empty(),
        "{} failed student(s): {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert_eq!(
        homes.len(),
        STUDENTS,
        "every student finished within 40 s (took {took:?})"
    );
    // Every submission recorded exactly once, on the student's own node.
    let mut seen: HashMap<(String, String), (u32, String)> = HashMap::new();
    for s in &o {
        for (k, n) in s.attempts() {
            let e = seen.entry(k).or_insert((0, s.name().to_string()));
            e.0 += n;
            e.1 = s.name().to_string();
        }
    }
    assert_eq!(seen.len(), STUDENTS, "no lost submission");
    for i in 0..STUDENTS {
        let user = format!("student{i:04}");
        let key = (user.clone(), format!("a{i}"));
        let (n, on) = seen
            .get(&key)
            .unwrap_or_else(|| panic!("{user}'s submission lost"));
        assert_eq!(*n, 1, "{user}'s submission recorded {n} times");
        assert_eq!(on, &homes[&user], "{user} submitted on their own node");
    }
    // Spread over the three nodes, none over its maxconn.
    for s in &o {
        let mine = homes.values().filter(|h| *h == s.name()).count();
        assert!(
            mine >= STUDENTS / 5,
            "{} has {mine} of {STUDENTS} students",
            s.name()
        );
        assert!(
            s.max_active() <= MAXCONN,
            "{}: {} requests in flight at once, maxconn {MAXCONN}",
            s.name(),
            s.max_active()
        );
        assert_eq!(s.sessions(), mine, "{}: one session per student", s.name());
    }
    assert!(took < Duration::from_secs(40), "took {took:?}");
}
