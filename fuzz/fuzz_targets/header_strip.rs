//! Request header stripping (`src/pipeline/strip.rs`, `src/proxy/identity.rs`,
//! `proxy::strip_hop_by_hop`) on header lists made of identity and hop-by-hop names in every
//! spelling, under a config that renames one identity header and adds a claim header.
//!
//! Properties, the expected set computed here from the names alone:
//! - no identity header survives in any spelling (ASCII case, `_` for `-`), the renamed one and
//!   the `[identity.claims]` one included;
//! - no hop-by-hop header survives (the fixed list in any spelling, `Proxy-*`, every header a
//!   `Connection` value names), `Upgrade` and `Connection: upgrade` only for a WebSocket
//!   upgrade;
//! - every other header survives with its values in order, cookie crumbs joined into one
//!   `Cookie` with `; `.

#![no_main]

use std::sync::OnceLock;

use authgate::config::{Identity, Loaded};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

const NAMES: &[&str] = &[
    "x-uid",
    "X_UID",
    "x-user-id",
    "x-user-name",
    "X_User_Name",
    "x-tenant-id",
    "x_tenant_id",
    "x-user-roles",
    "x-session-id",
    "x-user-platform",
    "x-user-email",
    "X_USER_EMAIL",
    "connection",
    "keep-alive",
    "keep_alive",
    "te",
    "trailer",
    "transfer-encoding",
    "transfer_encoding",
    "proxy-authorization",
    "proxy-connection",
    "proxy_x",
    "proxy-foo",
    "upgrade",
    "cookie",
    "accept",
    "x-custom",
    "x_custom",
    "authorization",
    "host",
    "x-forwarded-for",
    "content-length",
];

const VALUES: &[&str] = &[
    "1",
    "admin",
    "close",
    "keep-alive",
    "upgrade",
    "Upgrade",
    "websocket",
    "x-custom",
    "x-custom, accept",
    "x_custom",
    "accept",
    "a=1",
    "at=tok; b=2",
    "x-user-id",
    "te, trailer",
    "X-Custom , Keep-Alive",
    "cookie",
    "",
];

#[derive(Arbitrary, Debug)]
enum Text {
    Known(u8),
    Raw(String),
}

impl Text {
    fn get<'a>(&'a self, table: &[&'static str]) -> &'a str {
        match self {
            Text::Known(i) => table[usize::from(*i) % table.len()],
            Text::Raw(s) => s,
        }
    }
}

fn identity() -> &'static Identity {
    static LOADED: OnceLock<Loaded> = OnceLock::new();
    let loaded = LOADED.get_or_init(|| {
        let text = r#"
[token]
secret_env = "S"
[session]
mode = "stateless"
[login]
backend = "none"
[identity]
user_id = "X-UID"
[identity.claims]
"X-User-Email" = "email"
[[upstreams]]
name = "up"
urls = ["http://127.0.0.1:9"]
[[routes]]
path = "/"
upstream = "up"
auth = "public"
"#;
        let env = |_: &str| Some("fuzz-secret-0123456789abcdef0123456789".to_owned());
        authgate::config::load_str(text, std::path::Path::new("/nonexistent"), &env)
            .unwrap_or_else(|e| panic!("the fuzz config: {e}"))
    });
    &loaded.config.identity
}

/// ASCII lower case with `_` as `-`: how legacy stacks fold header names.
fn fold(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b == b'_' {
                '-'
            } else {
                b.to_ascii_lowercase() as char
            }
        })
        .collect()
}

const IDENTITY: &[&str] = &[
    "x-uid",
    "x-user-name",
    "x-tenant-id",
    "x-user-roles",
    "x-session-id",
    "x-user-platform",
    "x-user-email",
];
const HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "proxy-authorization",
    "proxy-connection",
];

fuzz_target!(|pairs: Vec<(Text, Text)>| {
    let mut h = HeaderMap::new();
    for (n, v) in pairs.iter().take(24) {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(n.get(NAMES).as_bytes()),
            HeaderValue::from_str(v.get(VALUES)),
        ) else {
            continue;
        };
        h.append(name, value);
    }
    let before = h.clone();
    let id = identity();
    let websocket = authgate::fuzzing::strip_request_headers(&mut h, id);

    let listed: Vec<String> = before
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty() && t != "keep-alive" && t != "close")
        .collect();
    let goes = |name: &str| {
        let folded = fold(name);
        IDENTITY.contains(&folded.as_str())
            || HOP.contains(&folded.as_str())
            || name.starts_with("proxy-")
            || name.starts_with("proxy_")
            || (name == "upgrade" && !websocket)
            || (listed.iter().any(|t| t == name) && !(websocket && name == "upgrade"))
    };
    for name in h.keys() {
        let n = name.as_str();
        assert!(
            !authgate::fuzzing::is_identity_header(id, n) && !IDENTITY.contains(&fold(n).as_str()),
            "identity header {n} survived"
        );
        if websocket && n == "connection" {
            assert_eq!(h.get_all(name).iter().collect::<Vec<_>>(), ["upgrade"]);
            continue;
        }
        assert!(!goes(n), "{n} survived: before {before:?}, after {h:?}");
    }
    for name in before.keys() {
        let n = name.as_str();
        if goes(n) {
            continue;
        }
        let want: Vec<&[u8]> = before
            .get_all(name)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        let got: Vec<&[u8]> = h.get_all(name).iter().map(HeaderValue::as_bytes).collect();
        if n == "cookie" && want.len() > 1 {
            // Joined with "; " (an empty crumb at the start adds no separator).
            let mut joined = Vec::new();
            for crumb in &want {
                if !joined.is_empty() {
                    joined.extend_from_slice(b"; ");
                }
                joined.extend_from_slice(crumb);
            }
            assert_eq!(got, [joined.as_slice()], "cookie crumbs");
        } else {
            assert_eq!(got, want, "{n} changed: before {before:?}, after {h:?}");
        }
    }
    assert_eq!(websocket, h.contains_key(http::header::UPGRADE));
});
