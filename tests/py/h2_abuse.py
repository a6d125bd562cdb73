#!/usr/bin/env python3
"""The HTTP/2 protocol suite of tests/tests/http2_abuse.rs, written with PyPI's `h2`
(hyper-h2), its validation turned off so that it sends what a broken or hostile client
would. One case per run:

    h2_abuse.py HOST PORT CASE

prints one line of JSON: what came back on the stream and the connection:
{"status": N|null, "reset": CODE|null, "goaway": CODE|null, "closed": bool}.
Error codes are numbers (RFC 9113 §7: PROTOCOL_ERROR 1, CANCEL 8, COMPRESSION_ERROR 9,
ENHANCE_YOUR_CALM 11).
"""

import json
import socket
import struct
import sys
import time

import h2.config
import h2.connection
import h2.events
import hpack

HOST, PORT, CASE = sys.argv[1], int(sys.argv[2]), sys.argv[3]


def base(path="/", method="GET", extra=()):
    return [(":method", method), (":scheme", "http"), (":authority", "test"), (":path", path)] + list(extra)


# Malformed requests: (headers, body or None, declared end of stream on HEADERS).
MALFORMED = {
    "connection": (base(extra=[("connection", "keep-alive")]), None),
    "keep-alive": (base(extra=[("keep-alive", "5")]), None),
    "proxy-connection": (base(extra=[("proxy-connection", "keep-alive")]), None),
    "transfer-encoding": (base(extra=[("transfer-encoding", "chunked")]), None),
    "upgrade": (base(extra=[("upgrade", "websocket")]), None),
    "te-gzip": (base(extra=[("te", "gzip")]), None),
    "cr-in-value": (base(extra=[("x-a", "b\rc")]), None),
    "lf-in-value": (base(extra=[("x-a", "b\nx-injected: 1")]), None),
    "nul-in-value": (base(extra=[("x-a", "b\x00c")]), None),
    "upper-case-name": (base(extra=[("X-Upper", "1")]), None),
    "short-body": (base("/upload", "POST", [("content-length", "10")]), b"12345"),
    "long-body": (base("/upload", "POST", [("content-length", "5")]), b"1234567890"),
    "no-path": ([(":method", "GET"), (":scheme", "http"), (":authority", "test")], None),
    "no-method": ([(":scheme", "http"), (":authority", "test"), (":path", "/")], None),
    "two-paths": (base() + [(":path", "/again")], None),
    "pseudo-after-regular": ([(":method", "GET"), ("x-a", "1"), (":scheme", "http"), (":authority", "test"), (":path", "/")], None),
    "authority-host-differ": (base(extra=[("host", "other.example")]), None),
}


def connect(window=None):
    """A connection with the preface and SETTINGS sent by h2's state machine."""
    s = socket.create_connection((HOST, PORT), timeout=10)
    cfg = h2.config.H2Configuration(
        client_side=True,
        header_encoding="utf-8",
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        validate_inbound_headers=False,
    )
    c = h2.connection.H2Connection(config=cfg)
    c.initiate_connection()
    if window is not None:
        c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
    s.sendall(c.data_to_send())
    return s, c


def raw_frame(kind, flags, stream, payload=b""):
    n = len(payload)
    return struct.pack(">I", n)[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def collect(s, stream, limit=5.0):
    """Reads the server's frames (followed by hand, whatever state the client library
    would be in) until the stream is answered or reset, the connection ends, or `limit`
    seconds pass. SETTINGS are acknowledged."""
    out = {"status": None, "reset": None, "goaway": None, "closed": False}
    dec = hpack.Decoder()
    buf = b""
    deadline = time.time() + limit
    s.settimeout(0.2)
    while time.time() < deadline:
        try:
            data = s.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            out["closed"] = True
            break
        if not data:
            out["closed"] = True
            break
        buf += data
        while len(buf) >= 9:
            n = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + n:
                break
            kind, flags = buf[3], buf[4]
            sid = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            payload, buf = buf[9 : 9 + n], buf[9 + n :]
            if kind == 0x4 and not flags & 0x1:
                try:
                    s.sendall(raw_frame(0x4, 0x1, 0))
                except OSError:
                    pass
            elif kind == 0x1:
                try:
                    fields = dict(dec.decode(payload))
                except Exception:
                    fields = {}
                if sid == stream:
                    st = fields.get(":status") or fields.get(b":status")
                    out["status"] = int(st) if st else None
            elif kind == 0x3 and sid == stream:
                out["reset"] = int.from_bytes(payload[:4], "big")
            elif kind == 0x7:
                out["goaway"] = int.from_bytes(payload[4:8], "big")
        if out["goaway"] is not None or out["reset"] is not None:
            break
        if out["status"] is not None and CASE in MALFORMED:
            break
    return out


def malformed(name):
    headers, body = MALFORMED[name]
    s, _ = connect()
    # Encoded by hand (hpack, of the h2 project): h2 itself would not send some of these.
    block = hpack.Encoder().encode(headers, huffman=False)
    flags = 0x4 | (0x1 if body is None else 0)
    s.sendall(raw_frame(0x1, flags, 1, block))
    if body is not None:
        s.sendall(raw_frame(0x0, 0x1, 1, body))
    return collect(s, 1)


def rapid_reset():
    s, c = connect()
    for i in range(300):
        sid = 1 + 2 * i
        c.send_headers(sid, base(), end_stream=True)
        c.reset_stream(sid)
        try:
            s.sendall(c.data_to_send())
        except OSError:
            break
    return collect(s, 1)


def flood(kind):
    s, c = connect()
    burst = b""
    if kind == "ping":
        burst = b"".join(raw_frame(0x6, 0, 0, struct.pack(">Q", i)) for i in range(500))
    elif kind == "settings":
        burst = b"".join(raw_frame(0x4, 0, 0) for _ in range(500))
    elif kind == "empty-data":
        c.send_headers(1, base("/upload", "POST"), end_stream=False)
        s.sendall(c.data_to_send())
        burst = b"".join(raw_frame(0x0, 0, 1) for _ in range(500))
    elif kind == "continuation":
        block = hpack.Encoder().encode(base(), huffman=False)
        burst = raw_frame(0x1, 0x1, 1, block) + b"".join(raw_frame(0x9, 0, 1) for _ in range(500))
    try:
        s.sendall(burst)
    except OSError:
        pass
    return collect(s, 1)


def window_never_opens():
    s, c = connect(window=0)
    c.send_headers(1, base("/download?size=100000"), end_stream=True)
    s.sendall(c.data_to_send())
    return collect(s, 1, limit=10.0)


def goaway_with_a_stream_open():
    """A slow request in flight while the engine reloads or stops: the stream is
    answered in full, and GOAWAY (NO_ERROR) comes; the test triggers the reload. The
    frames are followed by hand: after a GOAWAY, h2's client state machine takes no
    more frames, while the stream the GOAWAY lets finish is still to come."""
    s, c = connect()
    c.send_headers(1, base("/slow?ms=1500"), end_stream=True)
    s.sendall(c.data_to_send())
    print("sent", flush=True)
    out = {"status": None, "reset": None, "goaway": None, "closed": False, "body": 0, "ended": False}
    dec = hpack.Decoder()
    buf = b""
    deadline = time.time() + 10
    s.settimeout(0.2)
    while time.time() < deadline and not (out["ended"] and out["goaway"] is not None):
        try:
            data = s.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            out["closed"] = True
            break
        if not data:
            out["closed"] = True
            break
        buf += data
        while len(buf) >= 9:
            n = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + n:
                break
            kind, flags = buf[3], buf[4]
            sid = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            payload, buf = buf[9 : 9 + n], buf[9 + n :]
            reply = b""
            if kind == 0x4 and not flags & 0x1:
                reply = raw_frame(0x4, 0x1, 0)
            elif kind == 0x6 and not flags & 0x1:
                reply = raw_frame(0x6, 0x1, 0, payload)
            elif kind == 0x1 and sid == 1:
                fields = dict(dec.decode(payload))
                out["status"] = int(fields.get(":status", "0"))
                out["ended"] = out["ended"] or bool(flags & 0x1)
            elif kind == 0x0 and sid == 1:
                out["body"] += n
                out["ended"] = out["ended"] or bool(flags & 0x1)
            elif kind == 0x3 and sid == 1:
                out["reset"] = int.from_bytes(payload[:4], "big")
            elif kind == 0x7 and out["goaway"] is None:
                out["goaway"] = int.from_bytes(payload[4:8], "big")
            if reply:
                try:
                    s.sendall(reply)
                except OSError:
                    pass
    return out


def main():
    if CASE in MALFORMED:
        out = malformed(CASE)
    elif CASE == "rapid-reset":
        out = rapid_reset()
    elif CASE.startswith("flood-"):
        out = flood(CASE[len("flood-"):])
    elif CASE == "window-never-opens":
        out = window_never_opens()
    elif CASE == "goaway-with-a-stream-open":
        out = goaway_with_a_stream_open()
    elif CASE == "list":
        print(json.dumps(sorted(MALFORMED)))
        return
    else:
        sys.exit(f"unknown case {CASE}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
