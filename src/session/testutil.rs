//! Test harness of the session unit tests: the integration tests' Redis harness
//! (`tests/it/support/redis.rs`, a throw-away `redis-server` or Redis Cluster, killed on drop),
//! compiled here from the same file so that there is one copy of it.

#[path = "../../tests/it/support/redis.rs"]
mod redis_harness;

pub(crate) use redis_harness::{RedisCluster, RedisSentinels, RedisServer};
