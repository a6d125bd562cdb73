//! `[log]`: where the access log goes, its format, and `dontlognull`.

use super::{fld, Ctx};
use crate::raw::{RawLog, S};
use crate::types::{Log, LogFormat, LogTarget};

pub(super) fn validate_log(l: Option<&RawLog>, cx: &mut Ctx) -> Log {
    let mut out = Log::default();
    let Some(l) = l else { return out };
    if let Some(v) = &l.access {
        out.access = access_target(v, cx);
    }
    if let Some(v) = &l.format {
        match v.get_ref().as_str() {
            "httplog" => out.format = LogFormat::Httplog,
            "json" => out.format = LogFormat::Json,
            s => cx.err(
                &v.span(),
                fld("log", "format"),
                format!("\"{s}\" is not a log format"),
                "write format = \"httplog\" or format = \"json\"",
            ),
        }
    }
    if let Some(v) = &l.dontlognull {
        out.dontlognull = *v.get_ref();
    }
    out
}

/// `access`: stdout, syslog, off or a file (whose folder should exist).
fn access_target(v: &S<String>, cx: &mut Ctx) -> LogTarget {
    let s = v.get_ref().as_str();
    match s {
        "stdout" => LogTarget::Stdout,
        "syslog" => LogTarget::Syslog,
        "off" => LogTarget::Off,
        "" => {
            cx.err(
                &v.span(),
                fld("log", "access"),
                "is empty",
                "write access = \"stdout\", \"syslog\", \"off\" or a file path",
            );
            LogTarget::Stdout
        }
        "stderr" | "STDOUT" | "Stdout" | "none" | "false" | "no" => {
            cx.err(
                &v.span(),
                fld("log", "access"),
                format!("\"{s}\" is not a log target (and would be taken as a file name)"),
                "write access = \"stdout\", \"syslog\", \"off\" or a file path such as \"/var/log/engine/access.log\" (for a file of that name, write \"./stderr\")",
            );
            LogTarget::Stdout
        }
        _ => {
            let p = cx.resolve(s);
            if let Some(dir) = p.parent() {
                if !dir.as_os_str().is_empty() && !dir.is_dir() {
                    cx.warn(
                        &v.span(),
                        fld("log", "access"),
                        format!("the folder {} does not exist (yet): the access log cannot be opened there", dir.display()),
                        format!("create {} or write another path", dir.display()),
                    );
                }
            }
            LogTarget::File(p)
        }
    }
}
