//! `[cors]`: the origins allowed (exact origins, or `*` without credentials), the request
//! headers allowed, credentials and the preflight max age.

use http::HeaderValue;

use super::{Cx, PLACEHOLDER_HEADER};
use crate::config::{file, Cors};

impl Cx<'_> {
    pub(super) fn cors(&mut self, f: &file::CorsFile) -> Cors {
        let mut allowed_origins = Vec::new();
        for (i, origin) in f.allowed_origins.iter().enumerate() {
            let key = format!("cors.allowed_origins[{i}]");
            if origin == "*" {
                if f.allow_credentials {
                    self.problem(
                        key,
                        "\"*\" cannot be combined with allow_credentials = true; list the origins",
                    );
                }
                allowed_origins.push(origin.clone());
            } else if is_origin(origin) {
                allowed_origins.push(origin.to_ascii_lowercase());
            } else {
                self.problem(
                    key,
                    format!("{origin:?} is not an origin like \"https://app.example.com\" or \"http://localhost:3000\" (no path, no trailing slash)"),
                );
            }
        }
        let mut names = Vec::new();
        for (i, text) in f.allowed_headers.iter().enumerate() {
            let name = self.header_name(&format!("cors.allowed_headers[{i}]"), text);
            if name != PLACEHOLDER_HEADER {
                names.push(text.as_str());
            }
        }
        // Header names are visible ASCII and ", " is too, so the joined value is valid.
        let allowed_headers = HeaderValue::from_str(&names.join(", "))
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        Cors {
            allowed_origins,
            allowed_headers,
            allow_credentials: f.allow_credentials,
            max_age: {
                let d = self.duration("cors.max_age", &f.max_age);
                self.whole_seconds("cors.max_age", d, "Access-Control-Max-Age")
            },
        }
    }
}

/// `scheme://host[:port]`, nothing after it.
fn is_origin(origin: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    scheme_ok
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', '@'])
        && rest
            .parse::<http::uri::Authority>()
            .is_ok_and(|a| !a.host().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;

    #[test]
    fn each_rule_reports_its_key_path() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str)] = &[
            // [cors]
            (
                "[cors]\nallowed_origins = [\"https://app.example.com/\"]",
                "cors.allowed_origins[0]",
                "not an origin",
            ),
            ("[cors]\nallowed_origins = [\"app.example.com\"]", "cors.allowed_origins[0]", "not an origin"),
            (
                "[cors]\nallowed_origins = [\"*\"]\nallow_credentials = true",
                "cors.allowed_origins[0]",
                "allow_credentials",
            ),
            ("[cors]\nallowed_headers = [\"Content-Type\", \"X Bad\"]", "cors.allowed_headers[1]", "not a valid header name"),
            ("[cors]\nmax_age = \"ten minutes\"", "cors.max_age", "not a duration"),
            // Durations a key cannot represent are refused, never cut (issue 15).
            ("[cors]\nmax_age = \"1500ms\"", "cors.max_age", "not a whole number of seconds"),
        ];
        assert_rules(cases);
    }

    #[test]
    fn origins() {
        for (o, want) in [
            ("https://a.example", true),
            ("http://localhost:3000", true),
            ("capacitor://localhost", true),
            ("https://a.example/", false),
            ("https://a.example/x", false),
            ("https://u@a.example", false),
            ("https://", false),
            ("a.example", false),
            ("1http://a", false),
        ] {
            assert_eq!(is_origin(o), want, "{o:?}");
        }
    }
}
