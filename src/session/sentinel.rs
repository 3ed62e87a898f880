//! Redis Sentinel for the Redis store (`session.redis_sentinel`): the master is whatever the
//! sentinels say it is, asked again whenever the connection to it fails.
//!
//! [`SentinelConn`] is a [`ConnectionLike`] the store uses like a `ConnectionManager`. It keeps
//! one multiplexed connection to the current master behind an `ArcSwapOption` (one atomic
//! load per call on the hot path, no lock). A call that fails as a lost, refused or timed-out
//! connection, or that a demoted master refuses (`READONLY`, `MASTERDOWN`, `LOADING`), drops
//! that connection, and the next call asks the sentinels for the master again (redis-rs'
//! [`SentinelClient`], which also checks that the node it names says it is a master). One
//! lookup at a time: concurrent calls wait for it under a tokio mutex (off the hot path, bounded
//! by the store's timeout). A failover is noticed three ways: the revocation subscriber asks a
//! sentinel every second where the master is ([`SentinelConn::moved_from`]) and, if it moved,
//! drops the store's connection and resubscribes on the new master; a write no replica
//! acknowledges drops it too (see below); and Sentinel itself kills the old master's clients
//! when it demotes it (some 10 s after the failover).
//!
//! A clone of a `SentinelConn` starts unpinned and pins the master its first call goes to: the
//! calls of one store operation (a script, then its `WAIT`) all go to one node over one
//! connection, so `WAIT` counts the replicas that have the script's writes.
//!
//! # Replication wait
//! [`SentinelConn::wait_replicated`] runs `WAIT 1 <timeout/2>` after a login and a rotation
//! when the sentinels know a replica of the master (`num-slaves` of `SENTINEL MASTER`, read
//! when the master is found). So a session or rotation the client is told about is on a
//! replica too, and survives a failover. If no replica acknowledges in time, the operation
//! fails as unavailable (503; a rotation retried within the grace gets the same successor) and
//! the connection is dropped, so the next call asks the sentinels again: that is also what
//! moves a gateway off a master that has just been failed over (its replica left it for the new
//! master, so nothing acknowledges there), before Sentinel gets round to demoting it. Right
//! after a failover the new master's replica (the old master) is known but not yet caught up:
//! logins and rotations answer 503 until it is. A master the sentinels know no replica of has
//! nothing to wait for: its writes are accepted, with one warning that they are not
//! replicated. (A replica removed for good stays known until `SENTINEL RESET`.)

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, Cmd, IntoConnectionInfo, Pipeline, RedisError, RedisFuture,
    RedisResult, Value,
};

/// The connection to the master the sentinels name. Cheap to clone; see the module's doc.
pub(crate) struct SentinelConn {
    shared: Arc<Shared>,
    /// The master this handle's calls go to, once it made one.
    pinned: Option<Arc<Master>>,
}

impl Clone for SentinelConn {
    /// A new handle, unpinned: its first call goes to the current master.
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            pinned: None,
        }
    }
}

struct Shared {
    /// Asks the sentinels; `&mut` for its connection cache, hence the mutex.
    client: tokio::sync::Mutex<SentinelClient>,
    current: ArcSwapOption<Master>,
    config: AsyncConnectionConfig,
    timeout: Duration,
    /// Numbers the masters found, so a late failure drops only the connection it failed on.
    epochs: AtomicU64,
    /// The "writes are not replicated" warning was given (once per process and store).
    warned_unreplicated: AtomicBool,
    /// The master's name at the sentinels.
    name: String,
    /// A connection to a sentinel, for [`SentinelConn::moved_from`]'s question.
    asker: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// `host:port` of the sentinels, for log lines.
    at: String,
}

/// One connection to one master.
struct Master {
    conn: MultiplexedConnection,
    epoch: u64,
    /// `host:port` of the master, for log lines.
    addr: String,
    /// Replicas the sentinels knew of it when it was found.
    replicas: usize,
}

/// Errors after which the connection is dropped and the master asked for again.
fn is_stale(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || matches!(e.code(), Some("READONLY" | "MASTERDOWN" | "LOADING"))
}

impl SentinelConn {
    /// Sets up the lookup; connects nothing yet. `redis_url` gives the master's credentials,
    /// database and TLS (its host is not used); `nodes` are the sentinels' URLs.
    pub(crate) fn new(
        master: &str,
        nodes: &[String],
        redis_url: &str,
        timeout: Duration,
    ) -> RedisResult<Self> {
        let info = redis_url.into_connection_info()?;
        let mut node = SentinelNodeConnectionInfo::default()
            .set_redis_connection_info(info.redis_settings().clone());
        if redis_url.starts_with("rediss://") {
            node = node.set_tls_mode(redis::TlsMode::Secure);
        }
        let client = SentinelClient::build(
            nodes.iter().map(String::as_str).collect(),
            master,
            Some(node),
            SentinelServerType::Master,
        )?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let at = nodes
            .iter()
            .map(|n| super::redis::host_port(n))
            .collect::<Vec<_>>()
            .join(", ");
        Ok(Self {
            shared: Arc::new(Shared {
                client: tokio::sync::Mutex::new(client),
                current: ArcSwapOption::empty(),
                config,
                timeout,
                epochs: AtomicU64::new(0),
                warned_unreplicated: AtomicBool::new(false),
                name: master.to_owned(),
                asker: tokio::sync::Mutex::new(None),
                at: format!("sentinel {master} via {at}"),
            }),
            pinned: None,
        })
    }

    /// Where the store is, for log lines: the sentinels, never a password.
    pub(crate) fn describe(&self) -> String {
        self.shared.at.clone()
    }

    /// A client of the current master, for the revocation subscription (asks the sentinels).
    pub(crate) async fn master_client(&self) -> RedisResult<Client> {
        self.shared.client.lock().await.async_get_client().await
    }

    /// Whether the sentinels now name another master than `at` (`host:port`): a failover. If
    /// so, the store's connection is dropped too (unless it already moved), so its next call
    /// goes to the new master. A sentinel that does not answer says nothing moved.
    pub(crate) async fn moved_from(&self, at: &str) -> bool {
        let Ok(now) = self.shared.master_addr().await else {
            return false;
        };
        if now == at {
            return false;
        }
        if let Some(current) = self.shared.current.load_full() {
            if current.addr != now {
                self.shared
                    .drop_master(&current, &"the sentinels name another master");
            }
        }
        tracing::info!(store = "redis", from = %at, to = %now, "Redis Sentinel failover: following the new master");
        true
    }

    /// The master this handle uses: pinned, current, or found now.
    async fn master(&mut self) -> RedisResult<Arc<Master>> {
        if let Some(m) = &self.pinned {
            return Ok(m.clone());
        }
        let m = match self.shared.current.load_full() {
            Some(m) => m,
            None => self.shared.find().await?,
        };
        self.pinned = Some(m.clone());
        Ok(m)
    }

    fn failed(&self, master: &Master, e: &RedisError) {
        if is_stale(e) {
            self.shared.drop_master(master, e);
        }
    }

    /// After a write on this handle: waits until a replica has it (see the module's doc).
    /// `Ok(false)`: the sentinels know a replica, but none acknowledged in time.
    pub(crate) async fn wait_replicated(&mut self) -> RedisResult<bool> {
        let master = self.master().await?;
        if master.replicas == 0 {
            self.shared.unreplicated(&master);
            return Ok(true);
        }
        let wait_ms = (self.shared.timeout / 2).as_millis().max(1) as u64;
        let mut wait = redis::cmd("WAIT");
        wait.arg(1).arg(wait_ms);
        let acked: i64 = wait.query_async(self).await?;
        if acked >= 1 {
            return Ok(true);
        }
        self.shared.drop_master(&master, &"no replica acknowledged");
        Ok(false)
    }
}

/// `num-slaves` in a `SENTINEL MASTER` answer (a flat list of names and values); 0 if absent.
fn known_replicas(fields: &[String]) -> usize {
    fields
        .chunks(2)
        .find(|kv| kv[0] == "num-slaves")
        .and_then(|kv| kv.get(1)?.parse().ok())
        .unwrap_or(0)
}

impl Shared {
    /// Asks the sentinels for the master and connects to it, unless another call has just
    /// done so.
    async fn find(&self) -> RedisResult<Arc<Master>> {
        let mut client = self.client.lock().await;
        if let Some(m) = self.current.load_full() {
            return Ok(m);
        }
        let master = client.async_get_client().await?;
        let addr = master.get_connection_info().addr().to_string();
        let conn = master
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        let mut sentinel = client
            .async_get_sentinel_client()
            .await?
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        drop(client);
        let fields: Vec<String> = redis::cmd("SENTINEL")
            .arg("MASTER")
            .arg(&self.name)
            .query_async(&mut sentinel)
            .await?;
        let m = Arc::new(Master {
            conn,
            epoch: self.epochs.fetch_add(1, Ordering::Relaxed) + 1,
            addr,
            replicas: known_replicas(&fields),
        });
        tracing::info!(
            store = "redis",
            redis = %self.at,
            master = %m.addr,
            replicas = m.replicas,
            "session store: Redis master found through Sentinel"
        );
        self.current.store(Some(m.clone()));
        Ok(m)
    }

    /// `host:port` of the master, as a sentinel says now (`SENTINEL GET-MASTER-ADDR-BY-NAME`),
    /// over a kept connection to one sentinel.
    async fn master_addr(&self) -> RedisResult<String> {
        let mut asker = self.asker.lock().await;
        let mut conn = match asker.take() {
            Some(c) => c,
            None => {
                let sentinel = self.client.lock().await.async_get_sentinel_client().await?;
                sentinel
                    .get_multiplexed_async_connection_with_config(&self.config)
                    .await?
            }
        };
        let addr: Vec<String> = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(&self.name)
            .query_async(&mut conn)
            .await?;
        // Kept only after an answer: a broken connection is opened afresh next time.
        *asker = Some(conn);
        match addr.as_slice() {
            [host, port] => Ok(format!("{host}:{port}")),
            _ => Err(RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "no master address from Sentinel",
            ))),
        }
    }

    /// Forgets `master`'s connection if it is still the current one.
    fn drop_master(&self, master: &Master, e: &dyn std::fmt::Display) {
        let epoch = master.epoch;
        let prev = self.current.rcu(|cur| match cur {
            Some(c) if c.epoch == epoch => None,
            other => other.clone(),
        });
        if prev.is_some_and(|p| p.epoch == epoch) {
            tracing::debug!(master = %master.addr, error = %e, "Redis master connection dropped; asking Sentinel again");
        }
    }

    fn unreplicated(&self, master: &Master) {
        if !self.warned_unreplicated.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                store = "redis",
                master = %master.addr,
                "the sentinels know no replica of the Redis master: logins and rotations are \
                 not replicated, and a failover would lose them"
            );
        }
    }
}

impl ConnectionLike for SentinelConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let master = self.master().await?;
            let mut conn = master.conn.clone();
            let result = conn.req_packed_command(cmd).await;
            if let Err(e) = &result {
                self.failed(&master, e);
            }
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let master = self.master().await?;
            let mut conn = master.conn.clone();
            let result = conn.req_packed_commands(pipeline, offset, count).await;
            if let Err(e) = &result {
                self.failed(&master, e);
            }
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.pinned
            .as_ref()
            .or(self.shared.current.load().as_ref())
            .map_or(0, |m| m.conn.get_db())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_replicas_come_from_sentinel_master() {
        let fields = |pairs: &[(&str, &str)]| -> Vec<String> {
            pairs
                .iter()
                .flat_map(|(k, v)| [k.to_string(), v.to_string()])
                .collect()
        };
        let answer = fields(&[("name", "mymaster"), ("num-slaves", "2"), ("quorum", "2")]);
        assert_eq!(known_replicas(&answer), 2);
        assert_eq!(known_replicas(&fields(&[("num-slaves", "0")])), 0);
        assert_eq!(known_replicas(&fields(&[("name", "m")])), 0);
        assert_eq!(known_replicas(&fields(&[("num-slaves", "x")])), 0);
        assert_eq!(known_replicas(&["num-slaves".to_string()]), 0, "odd length");
        assert_eq!(known_replicas(&[]), 0);
    }
}
