//! The admin commands (a line of the admin socket, or [`crate::Running::admin`]).

use std::sync::atomic::Ordering;

use super::state::{AdminState, State};

impl State {
    pub(super) fn admin(&mut self, line: &str) -> String {
        let words: Vec<&str> = line.split_whitespace().collect();
        let find = |st: &State, name: &str| {
            st.snap.find_server(name).ok_or_else(|| {
                format!("error: no server {name:?} (write it as backend/server)\n\n")
            })
        };
        let ok = "ok\n\n".to_string();
        match words.as_slice() {
            ["show", "servers"] => self.show_servers(),
            ["show", "info"] => self.show_info(),
            ["show", "binds"] => self.show_binds(),
            ["disable", "server", name] => match find(self, name).map(|s| s.index()) {
                Ok(i) => {
                    self.admin[i] = AdminState::Maint;
                    self.publish();
                    ok
                }
                Err(e) => e,
            },
            ["enable", "server", name] => match find(self, name).map(|s| s.index()) {
                Ok(i) => {
                    self.admin[i] = AdminState::Ready;
                    self.publish();
                    ok
                }
                Err(e) => e,
            },
            ["set", "server", name, "state", st] => {
                let new = match *st {
                    "ready" => AdminState::Ready,
                    "drain" => AdminState::Drain,
                    "maint" => AdminState::Maint,
                    _ => return format!("error: unknown state {st:?}: use ready, drain or maint\n\n"),
                };
                match find(self, name).map(|s| s.index()) {
                    Ok(i) => {
                        self.admin[i] = new;
                        self.publish();
                        ok
                    }
                    Err(e) => e,
                }
            }
            ["set", "weight", name, w] => {
                let Ok(w) = w.parse::<u32>() else {
                    return format!("error: weight {w:?} is not a number from 0 to 256\n\n");
                };
                if w > 256 {
                    return format!("error: weight {w} is over 256\n\n");
                }
                match find(self, name).map(|s| s.index()) {
                    Ok(i) => {
                        self.weight[i] = w;
                        self.weight_set[i] = true;
                        self.publish();
                        ok
                    }
                    Err(e) => e,
                }
            }
            ["reload"] => self.reload(),
            ["upgrade"] => match &self.upgrader {
                Some(u) => match u() {
                    Ok(pid) => format!("ok: pid {pid} is taking over (this engine drains and exits once it accepts)\n\n"),
                    Err(e) => format!("error: upgrade not started: {e}\n\n"),
                },
                None => "error: this engine cannot start its successor (it was not started from a file with an admin socket)\n\n".into(),
            },
            [a, b] if format!("{a} {b}") == crate::shared::handover::DONE => {
                tracing::info!("takeover done: the new process accepts on the sockets; stopping gracefully");
                self.shared.stop.store(true, Ordering::Relaxed);
                ok
            }
            ["help"] => "commands: show servers | show info | show binds | disable server B/S | enable server B/S | set server B/S state ready|drain|maint | set weight B/S N | reload | upgrade\n\n".into(),
            _ => format!("error: unknown command {:?}; try: help\n\n", line.trim()),
        }
    }

    /// `reload`: the file read again and applied, `ok` or every reason it was refused.
    fn reload(&self) -> String {
        let Some(r) = &self.reloader else {
            return "error: this engine was not started from a file (-c FILE): nothing to reload\n\n".into();
        };
        match r() {
            Ok(()) => "ok\n\n".into(),
            Err(why) => {
                let mut out =
                    String::from("error: reload refused, the running configuration stays:\n");
                for l in why.lines() {
                    out.push_str("  ");
                    out.push_str(l);
                    out.push('\n');
                }
                out.push('\n');
                out
            }
        }
    }

    pub(super) fn show_servers(&self) -> String {
        let v = self.view();
        let mut out =
            String::from("# backend/server address state weight active queued total vetoed\n");
        for b in &v.backends {
            for s in &b.servers {
                out.push_str(&format!(
                    "{}/{} {} {} {} {} {} {} {}\n",
                    b.name,
                    s.name,
                    s.address,
                    s.state,
                    s.weight,
                    s.active,
                    s.queued,
                    s.total,
                    s.checks_vetoed
                ));
            }
        }
        out.push('\n');
        out
    }

    /// `show binds`: every address listened on, port 0 resolved to the port bound:
    /// `frontend/NAME ADDRESS` per bind, then `stats ADDRESS`.
    pub(super) fn show_binds(&self) -> String {
        let mut out = String::from("# listener address\n");
        for (f, a) in self.binds.as_ref().map(|b| b()).unwrap_or_default() {
            out.push_str(&format!("frontend/{f} {a}\n"));
        }
        if let Some(a) = self.stats_addr {
            out.push_str(&format!("stats {a}\n"));
        }
        out.push('\n');
        out
    }

    pub(super) fn show_info(&self) -> String {
        format!(
            "version: {}\npid: {}\nuptime: {}s\ncores: {}\ndriver: {}\nconnections: {}\n\n",
            env!("CARGO_PKG_VERSION"),
            std::process::id(),
            self.shared.started.elapsed().as_secs(),
            self.shared.cores,
            self.shared
                .driver
                .get()
                .map(|d| d.as_str())
                .unwrap_or("io_uring"),
            self.shared.conns.load(Ordering::Relaxed)
        )
    }
}
