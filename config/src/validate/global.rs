//! `[global]`: maxconn, the admin socket, the stats endpoint, the user and group.

use super::{fld, parse_addr_opts, Ctx};
use crate::raw::RawGlobal;
use crate::types::Global;

pub(super) fn validate_global(g: Option<&RawGlobal>, cx: &mut Ctx) -> Global {
    let mut out = Global {
        maxconn: 20000,
        admin_socket: None,
        stats: None,
        user: None,
        group: None,
    };
    let Some(g) = g else { return out };
    if let Some(v) = &g.maxconn {
        if let Some(n) = cx.int(
            v,
            "global",
            "maxconn",
            1,
            i64::from(u32::MAX),
            "write maxconn = 20000 (client connections held at once)",
        ) {
            out.maxconn = n as u32;
        }
    }
    if let Some(v) = &g.admin_socket {
        out.admin_socket = cx
            .nonempty(
                v,
                "global",
                "admin_socket",
                "write admin_socket = \"/run/engine-admin.sock\", or leave it out",
            )
            .map(|s| cx.resolve(&s));
    }
    if let Some(v) = &g.stats {
        match parse_addr_opts(v.get_ref(), 8404, true) {
            Ok(a) => out.stats = Some(a),
            Err((m, f)) => cx.err(&v.span(), fld("global", "stats"), m, f),
        }
    }
    if let Some(v) = &g.user {
        out.user = cx.nonempty(
            v,
            "global",
            "user",
            "write user = \"engine\", or leave it out",
        );
    }
    if let Some(v) = &g.group {
        out.group = cx.nonempty(
            v,
            "global",
            "group",
            "write group = \"engine\", or leave it out",
        );
    }
    out
}
