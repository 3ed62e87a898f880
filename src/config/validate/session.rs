//! `[session]`: the store (memory or Redis, its URLs), the mode, what to do when the store
//! fails, and whether stateful sessions can work at all with the login backend chosen.

use std::time::Duration;

use super::Cx;
use crate::config::{
    duration, file, LocalCache, OnStoreError, Sentinel, Session, SessionMode, StoreKind, Token,
};

/// The longest `session.local_cache_ttl`.
const MAX_LOCAL_CACHE_TTL: Duration = Duration::from_secs(600);
/// The smallest `session.local_cache_max_bytes` (a few entries).
const MIN_LOCAL_CACHE_BYTES: u64 = 4096;

/// A `redis://` or `rediss://` URL with something after the scheme.
fn redis_ok(url: &str) -> bool {
    ["redis://", "rediss://"].iter().any(|scheme| {
        url.strip_prefix(scheme)
            .is_some_and(|rest| !rest.is_empty())
    })
}

impl Cx<'_> {
    pub(super) fn session(&mut self, f: &file::SessionFile) -> Session {
        // The URL may carry a password: messages never repeat it.
        if !redis_ok(&f.redis_url) {
            self.problem("session.redis_url", "must be a redis:// or rediss:// URL");
        }
        for (i, url) in f.redis_cluster.iter().enumerate() {
            if !redis_ok(url) {
                self.problem(
                    format!("session.redis_cluster[{i}]"),
                    "must be a redis:// or rediss:// URL",
                );
            }
        }
        if f.store == file::StoreName::Memory && !f.redis_cluster.is_empty() {
            self.warn(
                "session.redis_cluster",
                "ignored: session.store is \"memory\"",
            );
        }
        let redis_sentinel = f.redis_sentinel.as_ref().map(|s| self.sentinel(f, s));
        let refresh_reuse_grace =
            self.duration("session.refresh_reuse_grace", &f.refresh_reuse_grace);
        let refresh_reuse_grace =
            self.store_span("session.refresh_reuse_grace", refresh_reuse_grace);
        Session {
            store: match f.store {
                file::StoreName::Memory => StoreKind::Memory,
                file::StoreName::Redis => StoreKind::Redis,
            },
            mode: match f.mode {
                file::ModeName::Stateful => SessionMode::Stateful,
                file::ModeName::Stateless => SessionMode::Stateless,
            },
            redis_url: f.redis_url.clone(),
            redis_cluster: f.redis_cluster.clone(),
            redis_sentinel,
            key_prefix: f.key_prefix.clone(),
            on_store_error: match f.on_store_error {
                file::OnStoreErrorName::Deny => OnStoreError::Deny,
                file::OnStoreErrorName::AllowStateless => OnStoreError::AllowStateless,
            },
            refresh_reuse_grace,
            local_cache: self.local_cache(f),
        }
    }

    /// `local_cache`, `local_cache_ttl`, `local_cache_max_bytes`. The TTL is the safety net
    /// behind the revocation channel, so it is kept short: at most ten minutes.
    fn local_cache(&mut self, f: &file::SessionFile) -> Option<LocalCache> {
        let ttl = self.duration("session.local_cache_ttl", &f.local_cache_ttl);
        if ttl.is_zero() && duration::parse(&f.local_cache_ttl).is_ok() {
            self.problem(
                "session.local_cache_ttl",
                "must be at least 1ms (turn the cache off with local_cache = false)",
            );
        }
        if ttl > MAX_LOCAL_CACHE_TTL {
            self.problem(
                "session.local_cache_ttl",
                format!(
                    "must be at most {}: it bounds how long a revocation the channel missed \
                     goes unseen",
                    duration::format(MAX_LOCAL_CACHE_TTL)
                ),
            );
        }
        if f.local_cache_max_bytes < MIN_LOCAL_CACHE_BYTES {
            self.problem(
                "session.local_cache_max_bytes",
                format!("must be at least {MIN_LOCAL_CACHE_BYTES}"),
            );
        }
        f.local_cache.then_some(LocalCache {
            ttl,
            max_bytes: f.local_cache_max_bytes,
        })
    }

    /// `session.redis_sentinel`: a master name, sentinel URLs, and not beside `redis_cluster`.
    fn sentinel(&mut self, f: &file::SessionFile, s: &file::SentinelFile) -> Sentinel {
        if s.master.trim().is_empty() {
            self.problem(
                "session.redis_sentinel.master",
                "must name the master the sentinels monitor (e.g. \"mymaster\")",
            );
        }
        if s.nodes.is_empty() {
            self.problem(
                "session.redis_sentinel.nodes",
                "must list at least one sentinel (e.g. [\"redis://127.0.0.1:26379\"])",
            );
        }
        for (i, url) in s.nodes.iter().enumerate() {
            if !redis_ok(url) {
                self.problem(
                    format!("session.redis_sentinel.nodes[{i}]"),
                    "must be a redis:// or rediss:// URL",
                );
            }
        }
        if !f.redis_cluster.is_empty() {
            self.problem(
                "session.redis_sentinel",
                "give either redis_cluster or redis_sentinel, not both",
            );
        }
        if f.store == file::StoreName::Memory {
            self.warn(
                "session.redis_sentinel",
                "ignored: session.store is \"memory\"",
            );
        }
        Sentinel {
            master: s.master.clone(),
            nodes: s.nodes.clone(),
        }
    }

    /// `login.backend = "none"` with `session.mode = "stateful"` needs sessions that some other
    /// authgate creates in a shared store, for tokens signed by a key this one knows (the
    /// signing key or a verify key). Otherwise every own token would be refused as
    /// `session_revoked`, while `check` said all was well.
    pub(super) fn sessions_possible(&mut self, token: &Token, session: &Session, no_login: bool) {
        if !no_login || session.mode != SessionMode::Stateful {
            return;
        }
        let own_keys = token.keys.can_sign() || token.keys.verify_key_count() > 0;
        let why = if session.store == StoreKind::Memory {
            "with login.backend = \"none\" and the memory store no session is ever created, \
             so every token would be refused as session_revoked"
        } else if !own_keys {
            "with login.backend = \"none\" and no signing or verify key, no token can name a \
             session of the store"
        } else {
            return;
        };
        self.problem(
            "session.mode",
            format!(
                "\"stateful\" cannot work here: {why}; set mode = \"stateless\", or share a \
                 Redis store with the authgate that issues the tokens (its key in \
                 token.verify_keys)"
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;

    #[test]
    fn each_rule_reports_its_key_path() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str)] = &[
            // [session]
            ("[session]\nstore = \"disk\"", "session.store", "unknown value"),
            ("[session]\nmode = \"sometimes\"", "session.mode", "unknown value"),
            ("[session]\non_store_error = \"ignore\"", "session.on_store_error", "unknown value"),
            ("[session]\nredis_url = \"http://127.0.0.1:6379\"", "session.redis_url", "redis://"),
            (
                "[session]\nredis_cluster = [\"redis://a:7000\", \"tcp://b:7001\"]",
                "session.redis_cluster[1]",
                "redis://",
            ),
            ("[session]\nredis_sentinel = { master = \"\", nodes = [\"redis://s:26379\"] }", "session.redis_sentinel.master", "must name the master"),
            ("[session]\nredis_sentinel = { master = \"m\", nodes = [] }", "session.redis_sentinel.nodes", "at least one sentinel"),
            ("[session]\nredis_sentinel = { master = \"m\", nodes = [\"redis://a:1\", \"s:2\"] }", "session.redis_sentinel.nodes[1]", "redis://"),
            ("[session]\nredis_sentinel = { master = \"m\" }", "session.redis_sentinel", "missing field `nodes`"),
            ("[session]\nredis_sentinel = { master = \"m\", nodes = [\"redis://a:1\"], nodez = 1 }", "session.redis_sentinel.nodez", "unknown key"),
            ("[session]\nredis_cluster = [\"redis://a:7000\"]\nredis_sentinel = { master = \"m\", nodes = [\"redis://a:1\"] }", "session.redis_sentinel", "not both"),
            ("[session]\nrefresh_reuse_grace = \"soon\"", "session.refresh_reuse_grace", "not a duration"),
            // Durations a key cannot represent are refused, never cut (issue 15). Below 1 ms
            // is not a duration at all (the store keeps milliseconds).
            ("[session]\nrefresh_reuse_grace = \"500us\"", "session.refresh_reuse_grace", "not a duration: the finest unit is the millisecond"),
            ("[session]\nrefresh_reuse_grace = \"3000001d\"", "session.refresh_reuse_grace", "longer than the session store can represent"),
            ("[session]\nlocal_cache_ttl = \"0s\"", "session.local_cache_ttl", "at least 1ms"),
            ("[session]\nlocal_cache_ttl = \"11m\"", "session.local_cache_ttl", "at most 10m"),
            ("[session]\nlocal_cache_ttl = \"soon\"", "session.local_cache_ttl", "not a duration"),
            ("[session]\nlocal_cache_max_bytes = 100", "session.local_cache_max_bytes", "at least 4096"),
        ];
        assert_rules(cases);
    }
}
