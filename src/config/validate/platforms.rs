//! `[platforms]`: the platform header, the platforms allowed, the default one, and how many
//! sessions a user may hold on each.

use std::collections::HashMap;

use super::Cx;
use crate::config::{file, Platforms};

impl Cx<'_> {
    pub(super) fn platforms(&mut self, f: &file::PlatformsFile) -> Platforms {
        let header = self.header_name("platforms.header", &f.header);
        if f.allowed.is_empty() {
            self.problem("platforms.allowed", "must name at least one platform");
        }
        for (i, name) in f.allowed.iter().enumerate() {
            let key = format!("platforms.allowed[{i}]");
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                self.problem(
                    key,
                    format!("{name:?}: use letters, digits, `-`, `_` or `.`"),
                );
            } else if f.allowed[..i].contains(name) {
                self.problem(key, format!("{name:?} is listed twice"));
            }
        }
        if !f.allowed.is_empty() && !f.allowed.contains(&f.default) {
            self.problem(
                "platforms.default",
                format!("{:?} is not in platforms.allowed", f.default),
            );
        }
        let max_sessions = match &f.max_sessions {
            None => f.allowed.iter().map(|p| (p.clone(), 1)).collect(),
            Some(limits) => {
                let mut out = HashMap::new();
                for (name, n) in limits {
                    let key = format!("platforms.max_sessions.{}", file::render_key(name));
                    if !f.allowed.contains(name) {
                        self.problem(key.clone(), format!("{name:?} is not in platforms.allowed"));
                    }
                    out.insert(name.clone(), self.count(&key, *n));
                }
                out
            }
        };
        Platforms {
            header,
            default: f.default.clone(),
            allowed: f.allowed.clone(),
            max_sessions,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;

    #[test]
    fn each_rule_reports_its_key_path() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str)] = &[
            // [platforms]
            ("[platforms]\nheader = \"X Platform\"", "platforms.header", "not a valid header name"),
            ("[platforms]\ndefault = \"desktop\"", "platforms.default", "not in platforms.allowed"),
            ("[platforms]\nallowed = []\ndefault = \"web\"", "platforms.allowed", "at least one"),
            ("[platforms]\nallowed = [\"web\", \"web\"]", "platforms.allowed[1]", "twice"),
            ("[platforms]\nallowed = [\"web\", \"a:b\"]", "platforms.allowed[1]", "letters, digits"),
            (
                "[platforms]\nmax_sessions = { web = 1, tv = 2 }",
                "platforms.max_sessions.tv",
                "not in platforms.allowed",
            ),
            ("[platforms]\nmax_sessions = { web = 0 }", "platforms.max_sessions.web", "from 1"),
        ];
        assert_rules(cases);
    }
}
