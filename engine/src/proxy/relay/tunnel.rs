//! A tunnel after `101 Switching Protocols` (WebSocket): bytes both ways until either
//! side closes or both are silent past the larger of the client and server timeouts.

use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;

use crate::proxy::client_io::ClientIo;

/// A tunnel after 101 Switching Protocols: bytes both ways until either side closes.
pub async fn tunnel<S: ClientIo>(io: S, up: TcpStream, leftover: Vec<u8>, idle: Duration) {
    let (mut cr, mut cw) = io.into_split();
    let (mut sr, mut sw) = up.into_split();
    if !leftover.is_empty() {
        let (r, _) = sw.write_all(leftover).await;
        if r.is_err() {
            return;
        }
    }
    monoio::join!(pump(&mut cr, &mut sw, idle), pump(&mut sr, &mut cw, idle));
}

/// One direction of a tunnel: copies until EOF, an error or `idle` without data, then
/// shuts the other side's writing down.
async fn pump<R: AsyncReadRent, W: AsyncWriteRent>(r: &mut R, w: &mut W, idle: Duration) {
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        let (res, b) = match monoio::time::timeout(idle, r.read(buf)).await {
            Ok(x) => x,
            Err(_) => break,
        };
        buf = b;
        match res {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let (res, b) = w.write_all(buf).await;
                buf = b;
                buf.clear();
                if res.is_err() {
                    break;
                }
            }
        }
    }
    let _ = w.shutdown().await;
}
