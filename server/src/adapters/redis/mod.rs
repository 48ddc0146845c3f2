//! Redis (through fred) as the current-state cache. Each instance is cached under two keys —
//! by id and by (entity type, external id) — so either lookup is one round trip. Writes go
//! through a Lua compare-and-set on the version, so racing servers never replace a newer state
//! with an older one.
//!
//! One Redis: both keys of an instance go through one compare-and-set script call — one
//! command, one answer, the record sent once.
//!
//! Redis Cluster: a script may only touch keys of one hash slot, and the two keys of an
//! instance cannot share one (a lookup by external id does not know the instance id, and a
//! lookup by id does not know the external id). So there each key gets its own call of the
//! script; the two are sent together. Every key carries a hash tag (`{...}`) of the server's
//! choosing — the instance id, or the entity type and escaped external id — so a client's
//! external id containing braces never picks the slot.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fred::prelude::*;
use fred::types::scripts::Script;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::State;
use crate::ports::{CacheError, InstanceRecord, StateCache};

/// Compare-and-set of each key: stores the entry under every key that does not hold a version
/// at least as new. Returns how many keys it wrote.
const PUT_IF_NEWER: &str = r"
local written = 0
for _, key in ipairs(KEYS) do
  local current = redis.call('HGET', key, 'v')
  if (not current) or tonumber(current) < tonumber(ARGV[1]) then
    redis.call('HSET', key, 'v', ARGV[1], 'd', ARGV[2])
    redis.call('PEXPIRE', key, ARGV[3])
    written = written + 1
  end
end
return written";

/// How the cache reaches Redis.
#[derive(Debug, Clone)]
pub struct RedisCacheConfig {
    pub url: String,
    pub ttl: Duration,
    /// Longest a cache command may take before the caller falls back to the database.
    pub command_timeout: Duration,
    /// CA certificates (PEM) a `rediss://` server's certificate must chain to; None: the
    /// system's roots.
    pub tls_ca_file: Option<std::path::PathBuf>,
}

pub struct RedisCache {
    client: Client,
    ttl_ms: i64,
    put: Script,
    /// Whether both keys of an instance may go to one script call: not on a cluster (fred's
    /// `redis-cluster://`), and no more once a server refused one as CROSSSLOT (a cluster
    /// node named by a `redis://` URL).
    one_call: std::sync::atomic::AtomicBool,
}

/// The cached form of an instance, as written (borrowing the record: [`Cached`] as JSON).
#[derive(Serialize)]
struct CachedRef<'a> {
    id: Uuid,
    entity_type_id: Uuid,
    entity_type_name: &'a str,
    external_id: &'a str,
    state: &'a State,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    archived: bool,
    erased: bool,
}

/// The cached form of an instance, as read.
#[derive(Deserialize)]
struct Cached {
    id: Uuid,
    entity_type_id: Uuid,
    entity_type_name: String,
    external_id: String,
    state: State,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    /// Absent from entries written before archiving existed: they were not archived.
    #[serde(default)]
    archived: bool,
    /// Absent from entries written before erasure existed: they were not erased.
    #[serde(default)]
    erased: bool,
}

fn err(e: impl std::fmt::Display) -> CacheError {
    CacheError(e.to_string())
}

/// The hash field holding an instance's cached record (`PUT_IF_NEWER` writes it as `'d'`, next
/// to the version in `'v'`). Public, with the keys, so the benchmark reads the very entry the
/// server reads.
pub const STATE_FIELD: &str = "d";

/// The key of an instance by id; its hash tag is the id.
pub fn id_key(id: Uuid) -> String {
    format!("tse:instance:{{{id}}}")
}

/// The key of an instance by entity type and external id; its hash tag is both, with `%`, `{`
/// and `}` of the external id percent-encoded so the tag always ends where the server put it.
pub fn external_key(entity_type_id: Uuid, external_id: &str) -> String {
    let mut escaped = String::with_capacity(external_id.len());
    for c in external_id.chars() {
        match c {
            '%' => escaped.push_str("%25"),
            '{' => escaped.push_str("%7B"),
            '}' => escaped.push_str("%7D"),
            c => escaped.push(c),
        }
    }
    format!("tse:external:{{{entity_type_id}:{escaped}}}")
}

impl RedisCache {
    /// Starts connecting in the background: a Redis that is down at start-up only means misses
    /// until it is back (fred reconnects on its own).
    pub async fn connect(config: &RedisCacheConfig) -> Result<Self, CacheError> {
        let mut redis_config = Config::from_url(&config.url).map_err(err)?;
        // `rediss://`: TLS, the certificate checked against REDIS_TLS_CA_FILE (or the system's
        // roots) and the host name.
        match (&redis_config.tls, &config.tls_ca_file) {
            (Some(_), ca) => {
                let check = crate::adapters::tls::ServerCheck::ChainAndName(ca.clone());
                let tls = crate::adapters::tls::client_config(&check, "REDIS_TLS_CA_FILE")
                    .map_err(CacheError)?;
                redis_config.tls = Some(tls.into());
            }
            (None, Some(_)) => {
                return Err(CacheError(
                    "REDIS_TLS_CA_FILE is set but REDIS_URL is not rediss:// (TLS)".into(),
                ));
            }
            (None, None) => {}
        }
        // Commands fail at once while disconnected instead of queueing: the database answers.
        redis_config.fail_fast = true;
        let one_call = !redis_config.server.is_clustered();
        let timeout = config.command_timeout;
        let client = Builder::from_config(redis_config)
            .with_connection_config(|c| {
                c.connection_timeout = timeout;
                c.internal_command_timeout = timeout;
                c.max_command_attempts = 1;
            })
            .with_performance_config(|p| {
                p.default_command_timeout = timeout;
            })
            .set_policy(ReconnectPolicy::new_constant(0, 250))
            .build()
            .map_err(err)?;
        client.connect();
        if tokio::time::timeout(Duration::from_secs(2), client.wait_for_connect())
            .await
            .is_err()
        {
            tracing::warn!(url = %super::secrets::mask_secrets(&config.url), "redis not reachable yet; reading from the database until it is");
        }
        Ok(Self {
            client,
            ttl_ms: config.ttl.as_millis().min(i64::MAX as u128) as i64,
            put: Script::from_lua(PUT_IF_NEWER),
            one_call: one_call.into(),
        })
    }

    async fn read(&self, key: String) -> Result<Option<InstanceRecord>, CacheError> {
        let data: Option<String> = self.client.hget(key, STATE_FIELD).await.map_err(err)?;
        let Some(data) = data else { return Ok(None) };
        let c: Cached = serde_json::from_str(&data).map_err(err)?;
        Ok(Some(InstanceRecord {
            id: c.id,
            entity_type_id: c.entity_type_id,
            entity_type_name: c.entity_type_name,
            external_id: c.external_id,
            state: c.state,
            version: c.version,
            created_at: c.created_at,
            updated_at: c.updated_at,
            archived: c.archived,
            erased: c.erased,
        }))
    }
}

#[async_trait]
impl StateCache for RedisCache {
    #[tracing::instrument(name = "redis get", skip(self), fields(db.system = "redis"))]
    async fn get(&self, instance_id: Uuid) -> Result<Option<InstanceRecord>, CacheError> {
        self.read(id_key(instance_id)).await
    }

    #[tracing::instrument(name = "redis get", skip(self), fields(db.system = "redis"))]
    async fn get_by_external_id(
        &self,
        entity_type_id: Uuid,
        external_id: &str,
    ) -> Result<Option<InstanceRecord>, CacheError> {
        self.read(external_key(entity_type_id, external_id)).await
    }

    #[tracing::instrument(
        name = "redis put",
        skip_all,
        fields(db.system = "redis", instance_id = %i.id, version = i.version)
    )]
    async fn put(&self, i: &InstanceRecord) -> Result<(), CacheError> {
        if i.erased {
            // No external id any more: only the entry by id.
            return self.put_keys(vec![id_key(i.id)], self.put_args(i)?).await;
        }
        if self.one_call.load(std::sync::atomic::Ordering::Relaxed) {
            // The keys and the record are handed over, not copied: only the one call that
            // finds a cluster (below) needs them again, and builds them again.
            let keys = vec![id_key(i.id), external_key(i.entity_type_id, &i.external_id)];
            match self.put_keys(keys, self.put_args(i)?).await {
                Err(e) if e.0.contains("CROSSSLOT") => {
                    tracing::info!(
                        "redis refused a script over two hash slots: a cluster; writing each key on its own from now on (name it redis-cluster:// to say so)"
                    );
                    self.one_call
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                }
                done => return done,
            }
        }
        // A cluster: one call per key, both sent at once (to their nodes in parallel); either
        // failing fails the put, which the application then repairs.
        let args = self.put_args(i)?;
        futures::try_join!(
            self.put_keys(vec![id_key(i.id)], args.clone()),
            self.put_keys(vec![external_key(i.entity_type_id, &i.external_id)], args)
        )?;
        Ok(())
    }

    #[tracing::instrument(
        name = "redis erase",
        skip_all,
        fields(db.system = "redis", instance_id = %erased.id, version = erased.version)
    )]
    async fn erase(
        &self,
        erased: &InstanceRecord,
        former_external_id: &str,
    ) -> Result<(), CacheError> {
        // The entry by id becomes the erased record at the erasure's version: a put of an older
        // state (a read or a commit from before the erasure, on any server) is refused by the
        // compare-and-set. The erased record has no external id, so it gets no key by one.
        self.put_keys(vec![id_key(erased.id)], self.put_args(erased)?)
            .await?;
        if !former_external_id.is_empty() {
            let _: i64 = self
                .client
                .del(external_key(erased.entity_type_id, former_external_id))
                .await
                .map_err(err)?;
        }
        Ok(())
    }
}

impl RedisCache {
    /// The compare-and-set's arguments for `i`: version, record, ttl.
    fn put_args(&self, i: &InstanceRecord) -> Result<Vec<String>, CacheError> {
        let data = serde_json::to_string(&CachedRef {
            id: i.id,
            entity_type_id: i.entity_type_id,
            entity_type_name: &i.entity_type_name,
            external_id: &i.external_id,
            state: &i.state,
            version: i.version,
            created_at: i.created_at,
            updated_at: i.updated_at,
            archived: i.archived,
            erased: i.erased,
        })
        .map_err(err)?;
        Ok(vec![i.version.to_string(), data, self.ttl_ms.to_string()])
    }

    /// The compare-and-set of `keys`, in one script call (so all of one hash slot on a
    /// cluster).
    async fn put_keys(&self, keys: Vec<String>, args: Vec<String>) -> Result<(), CacheError> {
        let _: i64 = self
            .put
            .evalsha_with_reload(&self.client, keys, args)
            .await
            .map_err(err)?;
        Ok(())
    }
}
