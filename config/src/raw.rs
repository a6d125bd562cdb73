//! The TOML as written: serde structs mirroring the file, every field optional so that
//! validation can report every mistake at once, and `Spanned` where a line is needed.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use toml::Spanned;

pub(crate) type S<T> = Spanned<T>;

/// A scalar of any TOML type, for fields whose wrong type deserves a tailored message
/// (a duration written as `5` instead of `"5s"`, a status written as `200`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scalar {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Other(&'static str),
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Str(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
                Ok(Scalar::Str(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar::Int(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Scalar, A::Error> {
                while m.next_entry::<de::IgnoredAny, de::IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other("a table (or a date)"))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut s: A) -> Result<Scalar, A::Error> {
                while s.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other("a list"))
            }
        }
        d.deserialize_any(V)
    }
}

/// A table whose keys are the operator's (`set_headers`), in file order.
#[derive(Debug, Clone, Default)]
pub(crate) struct OrderedMap(pub Vec<(S<String>, S<Scalar>)>);

impl<'de> Deserialize<'de> for OrderedMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table such as { \"X-Forwarded-Proto\" = \"https\" }")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<OrderedMap, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<S<String>, S<Scalar>>()? {
                    out.push((k, v));
                }
                Ok(OrderedMap(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub global: Option<S<RawGlobal>>,
    pub limits: Option<S<RawLimits>>,
    pub defaults: Option<S<RawTimeouts>>,
    pub log: Option<S<RawLog>>,
    #[serde(default)]
    pub frontend: Vec<S<RawFrontend>>,
    #[serde(default)]
    pub backend: Vec<S<RawBackend>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGlobal {
    pub maxconn: Option<S<i64>>,
    pub admin_socket: Option<S<String>>,
    pub stats: Option<S<String>>,
    pub user: Option<S<String>>,
    pub group: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub max_head_bytes: Option<S<i64>>,
    pub max_target_bytes: Option<S<i64>>,
    pub max_headers: Option<S<i64>>,
    pub max_body_bytes: Option<S<i64>>,
    pub pool_max_idle_per_server: Option<S<i64>>,
    pub pool_idle_timeout: Option<S<Scalar>>,
    pub drop_underscore_headers: Option<S<bool>>,
    pub h2_max_concurrent_streams: Option<S<i64>>,
    pub h2_max_header_list_size: Option<S<i64>>,
    pub h2_max_resets_per_second: Option<S<i64>>,
    pub h2_max_control_frames_per_second: Option<S<i64>>,
    pub h2_max_continuation_frames: Option<S<i64>>,
    pub h2_stream_idle_timeout: Option<S<Scalar>>,
}

/// `[defaults]`; the same fields are repeated in `RawFrontend` and `RawBackend`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTimeouts {
    pub timeout_connect: Option<S<Scalar>>,
    pub timeout_client: Option<S<Scalar>>,
    pub timeout_server: Option<S<Scalar>>,
    pub timeout_http_request: Option<S<Scalar>>,
    pub timeout_keep_alive: Option<S<Scalar>>,
    pub timeout_queue: Option<S<Scalar>>,
    pub retries: Option<S<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLog {
    pub access: Option<S<String>>,
    pub format: Option<S<String>>,
    pub dontlognull: Option<S<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFrontend {
    pub name: Option<S<String>>,
    pub bind: Option<S<Vec<S<String>>>>,
    pub backend: Option<S<String>>,
    pub redirect_https: Option<S<RawRedirect>>,
    pub tls: Option<S<RawTls>>,
    pub set_headers: Option<S<OrderedMap>>,
    pub forwarded_for: Option<S<bool>>,
    pub timeout_connect: Option<S<Scalar>>,
    pub timeout_client: Option<S<Scalar>>,
    pub timeout_server: Option<S<Scalar>>,
    pub timeout_http_request: Option<S<Scalar>>,
    pub timeout_keep_alive: Option<S<Scalar>>,
    pub timeout_queue: Option<S<Scalar>>,
    pub retries: Option<S<i64>>,
    pub alpn: Option<S<Vec<S<String>>>>,
    pub h2c: Option<S<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRedirect {
    pub code: Option<S<i64>>,
    pub except_prefixes: Option<Vec<S<String>>>,
    pub port: Option<S<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub certs: Option<S<Vec<S<toml::Value>>>>,
    pub handshake_timeout: Option<S<Scalar>>,
    pub session_resumption: Option<S<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackend {
    pub name: Option<S<String>>,
    pub balance: Option<S<String>>,
    pub errorfile_503: Option<S<String>>,
    pub cookie: Option<S<RawCookie>>,
    pub app_cookie: Option<S<String>>,
    pub max_queue: Option<S<i64>>,
    pub waiting_room: Option<S<String>>,
    pub check: Option<S<RawCheck>>,
    pub slow_response: Option<S<Scalar>>,
    pub panic_below: Option<S<i64>>,
    #[serde(default)]
    pub server: Vec<S<RawServer>>,
    pub timeout_connect: Option<S<Scalar>>,
    pub timeout_client: Option<S<Scalar>>,
    pub timeout_server: Option<S<Scalar>>,
    pub timeout_http_request: Option<S<Scalar>>,
    pub timeout_keep_alive: Option<S<Scalar>>,
    pub timeout_queue: Option<S<Scalar>>,
    pub retries: Option<S<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCookie {
    pub name: Option<S<String>>,
    pub mode: Option<S<String>>,
    pub indirect: Option<S<bool>>,
    pub nocache: Option<S<bool>>,
    pub httponly: Option<S<bool>>,
    pub secure: Option<S<bool>>,
    pub samesite: Option<S<String>>,
    pub domain: Option<S<String>>,
    pub maxidle: Option<S<Scalar>>,
    pub maxlife: Option<S<Scalar>>,
    pub key: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCheck {
    pub method: Option<S<String>>,
    pub uri: Option<S<String>>,
    pub host: Option<S<String>>,
    pub expect_status: Option<S<Scalar>>,
    pub expect_string: Option<S<String>>,
    pub interval: Option<S<Scalar>>,
    pub rise: Option<S<i64>>,
    pub fall: Option<S<i64>>,
    pub timeout: Option<S<Scalar>>,
    pub observe_errors: Option<S<i64>>,
    pub slowstart: Option<S<Scalar>>,
    pub live_traffic: Option<S<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub name: Option<S<String>>,
    pub address: Option<S<String>>,
    pub cookie: Option<S<String>>,
    pub weight: Option<S<i64>>,
    pub maxconn: Option<S<i64>>,
    pub backup: Option<S<bool>>,
    pub check: Option<S<bool>>,
}

impl RawFrontend {
    pub fn timeouts(&self) -> RawTimeouts {
        RawTimeouts {
            timeout_connect: self.timeout_connect.clone(),
            timeout_client: self.timeout_client.clone(),
            timeout_server: self.timeout_server.clone(),
            timeout_http_request: self.timeout_http_request.clone(),
            timeout_keep_alive: self.timeout_keep_alive.clone(),
            timeout_queue: self.timeout_queue.clone(),
            retries: self.retries.clone(),
        }
    }
}

impl RawBackend {
    pub fn timeouts(&self) -> RawTimeouts {
        RawTimeouts {
            timeout_connect: self.timeout_connect.clone(),
            timeout_client: self.timeout_client.clone(),
            timeout_server: self.timeout_server.clone(),
            timeout_http_request: self.timeout_http_request.clone(),
            timeout_keep_alive: self.timeout_keep_alive.clone(),
            timeout_queue: self.timeout_queue.clone(),
            retries: self.retries.clone(),
        }
    }
}
