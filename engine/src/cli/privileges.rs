//! The user and group the engine runs as once its ports are bound (`global.user`,
//! `global.group`): looked up before anything starts (a name that does not exist stops
//! the start with that error), applied after binding.

use std::ffi::CString;

/// The user and group to switch to, looked up.
pub struct Credentials {
    /// The user's name (for initgroups), uid and own group.
    user: Option<(CString, libc::uid_t, libc::gid_t)>,
    group: Option<libc::gid_t>,
    names: (Option<String>, Option<String>),
}

impl Credentials {
    pub fn resolve(user: Option<&str>, group: Option<&str>) -> Result<Credentials, String> {
        let group_id = match group {
            Some(g) => Some(group_id(g)?),
            None => None,
        };
        let user = match user {
            Some(u) => {
                let c = CString::new(u).map_err(|_| format!("bad user name {u:?}"))?;
                // SAFETY: c is a valid C string; getpwnam returns NULL or a valid
                // pointer, read at once.
                let (uid, gid) = unsafe {
                    let pw = libc::getpwnam(c.as_ptr());
                    if pw.is_null() {
                        return Err(format!(
                            "global.user {u:?} does not exist on this host: create it (useradd --system {u}) or fix the name"
                        ));
                    }
                    ((*pw).pw_uid, (*pw).pw_gid)
                };
                Some((c, uid, gid))
            }
            None => None,
        };
        let names = (user_name(user.as_ref()), group.map(str::to_string));
        Ok(Credentials {
            user,
            group: group_id,
            names,
        })
    }

    /// Switches to the group and user: supplementary groups first (the user's own, or
    /// none), then the group, then the user, each checked. Any step that fails stops
    /// the engine: it never runs on as root when told to run as someone else.
    pub fn apply(&self) -> Result<(), String> {
        let group = &self.names.1;
        let Some((c, uid, user_gid)) = &self.user else {
            if let Some(gid) = self.group {
                // SAFETY: getters without arguments.
                let ids = unsafe { (libc::getuid(), libc::getgid(), libc::getegid()) };
                if ids.0 != 0 && (ids.1, ids.2) == (gid, gid) {
                    return Ok(());
                }
                // SAFETY: setgroups with an empty list; setgid with a gid from getgrnam.
                if unsafe { libc::setgroups(0, std::ptr::null()) } != 0 {
                    return Err(format!(
                        "cannot clear the supplementary groups: {}",
                        last_err()
                    ));
                }
                if unsafe { libc::setgid(gid) } != 0 {
                    return Err(format!("cannot switch to group {group:?}: {}", last_err()));
                }
            }
            return Ok(());
        };
        let u = self.names.0.as_deref().unwrap_or("?");
        let gid = self.group.unwrap_or(*user_gid);
        // Already that user and group: an `upgrade`'s successor, started by an engine
        // that switched (it may no longer set groups, and needs not).
        // SAFETY: getters without arguments.
        let ids = unsafe {
            (
                libc::getuid(),
                libc::geteuid(),
                libc::getgid(),
                libc::getegid(),
            )
        };
        if *uid != 0 && ids == (*uid, *uid, gid, gid) {
            return Ok(());
        }
        // SAFETY: plain credential calls with values read above; glibc applies them to
        // every thread of the process.
        unsafe {
            if libc::initgroups(c.as_ptr(), gid) != 0 {
                return Err(format!("cannot set the groups of {u:?}: {}", last_err()));
            }
            if libc::setgid(gid) != 0 {
                return Err(format!("cannot switch to group {gid}: {}", last_err()));
            }
            if libc::setuid(*uid) != 0 {
                return Err(format!("cannot switch to user {u:?}: {}", last_err()));
            }
            if *uid != 0 && (libc::getuid() == 0 || libc::geteuid() == 0 || libc::setuid(0) == 0) {
                return Err(format!(
                    "still root after switching to {u:?}: refusing to run"
                ));
            }
        }
        Ok(())
    }
}

fn user_name(u: Option<&(CString, libc::uid_t, libc::gid_t)>) -> Option<String> {
    u.map(|(c, _, _)| c.to_string_lossy().into_owned())
}

fn group_id(g: &str) -> Result<libc::gid_t, String> {
    let c = CString::new(g).map_err(|_| format!("bad group name {g:?}"))?;
    // SAFETY: c is a valid C string; getgrnam returns NULL or a valid pointer, read at once.
    unsafe {
        let gr = libc::getgrnam(c.as_ptr());
        if gr.is_null() {
            return Err(format!(
                "global.group {g:?} does not exist on this host: create it (groupadd --system {g}) or fix the name"
            ));
        }
        Ok((*gr).gr_gid)
    }
}

fn last_err() -> std::io::Error {
    std::io::Error::last_os_error()
}
