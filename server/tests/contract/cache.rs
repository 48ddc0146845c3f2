//! The `StateCache` contract, on Redis (a redis-server of the test's own, `redis_cache::`) and
//! the in-memory cache (`memory_cache::`); then what only Redis has (`redis_only::`): expiry
//! and outages.

use std::sync::Arc;
use std::time::Duration;

use crate::common::{for_each_backend, json};
use chrono::{TimeDelta, TimeZone, Utc};
use temporal_state_server::adapters::memory::MemoryCache;
use temporal_state_server::adapters::redis::{RedisCache, RedisCacheConfig};
use temporal_state_server::ports::{InstanceRecord, StateCache};
use uuid::Uuid;

use super::fixture::obj;

for_each_backend!(
    CacheBackend { redis_cache => Redis, memory_cache => Memory };
    cache_misses_then_hits_by_both_keys,
    cache_never_replaces_a_newer_version,
    cache_concurrent_shuffled_puts_keep_the_newest,
    cache_erase_keeps_only_the_erased_record_by_id,
);

// ---------------------------------------------------------------------------------------------
// StateCache: Redis (a redis-server of the test's own) and the in-memory cache.

#[derive(Debug, Clone, Copy)]
enum CacheBackend {
    Redis,
    Memory,
}

/// How long a Redis command may take before the cache gives up (the server's default is 250 ms).
/// Long enough that a loaded 2-core CI machine never times out a healthy Redis (at 250 ms the
/// concurrent-puts test failed once under load), short enough to prove an outage errs promptly.
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

struct CacheFixture {
    cache: Arc<dyn StateCache>,
    /// The redis-server, killed when the fixture is dropped.
    redis: Option<crate::common::procs::Redis>,
}

impl CacheBackend {
    async fn open(self, ttl: Duration) -> CacheFixture {
        match self {
            CacheBackend::Redis => {
                let redis = crate::common::procs::Redis::start();
                let cache = RedisCache::connect(&RedisCacheConfig {
                    url: redis.url(),
                    ttl,
                    command_timeout: REDIS_TIMEOUT,
                    tls_ca_file: None,
                })
                .await
                .expect("connect to redis");
                CacheFixture {
                    cache: Arc::new(cache),
                    redis: Some(redis),
                }
            }
            CacheBackend::Memory => CacheFixture {
                cache: Arc::new(MemoryCache::default()),
                redis: None,
            },
        }
    }
}

fn cached(id: Uuid, entity_type_id: Uuid, external_id: &str, version: i64) -> InstanceRecord {
    let created = Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).unwrap() + TimeDelta::microseconds(7);
    InstanceRecord {
        id,
        entity_type_id,
        entity_type_name: "player".into(),
        external_id: external_id.into(),
        state: obj(json!({
            "version": version,
            "nested": {"list": [1, "two", null, {"k": true}], "f": 1.5},
            "text": "héllo ✓ \"q\""
        })),
        version,
        created_at: created,
        updated_at: created + TimeDelta::seconds(version),
        // Odd versions archived: the flag must survive the round trip too.
        archived: version % 2 == 1,
        erased: false,
    }
}

/// The record under both keys: by id and by (entity type, external id).
async fn cached_both(
    cache: &dyn StateCache,
    r: &InstanceRecord,
) -> (Option<InstanceRecord>, Option<InstanceRecord>) {
    (
        cache.get(r.id).await.expect("get"),
        cache
            .get_by_external_id(r.entity_type_id, &r.external_id)
            .await
            .expect("get by external id"),
    )
}

async fn cache_misses_then_hits_by_both_keys(b: CacheBackend) {
    let f = b.open(Duration::from_secs(60)).await;
    let c = f.cache.as_ref();
    let (t, other) = (Uuid::now_v7(), Uuid::now_v7());
    let r = cached(Uuid::now_v7(), t, "p-1: with spaces/and:colons é", 3);
    assert_eq!(cached_both(c, &r).await, (None, None));

    c.put(&r).await.unwrap();
    assert_eq!(cached_both(c, &r).await, (Some(r.clone()), Some(r.clone())));
    // The same external id under another type, another external id, another id: misses.
    assert_eq!(
        c.get_by_external_id(other, &r.external_id).await.unwrap(),
        None
    );
    assert_eq!(c.get_by_external_id(t, "p-1").await.unwrap(), None);
    assert_eq!(c.get(Uuid::now_v7()).await.unwrap(), None);

    // Another instance with that external id under the other type is another entry.
    let s = cached(Uuid::now_v7(), other, &r.external_id, 1);
    c.put(&s).await.unwrap();
    assert_eq!(cached_both(c, &s).await, (Some(s.clone()), Some(s.clone())));
    assert_eq!(cached_both(c, &r).await, (Some(r.clone()), Some(r)));
}

async fn cache_never_replaces_a_newer_version(b: CacheBackend) {
    let f = b.open(Duration::from_secs(60)).await;
    let c = f.cache.as_ref();
    let (id, t) = (Uuid::now_v7(), Uuid::now_v7());
    let v5 = cached(id, t, "p-1", 5);
    c.put(&v5).await.unwrap();
    // Older: ignored.
    c.put(&cached(id, t, "p-1", 3)).await.unwrap();
    assert_eq!(
        cached_both(c, &v5).await,
        (Some(v5.clone()), Some(v5.clone()))
    );
    // As new, but different: the first one stays.
    let mut other_v5 = v5.clone();
    other_v5.state = obj(json!({"other": true}));
    c.put(&other_v5).await.unwrap();
    assert_eq!(
        cached_both(c, &v5).await,
        (Some(v5.clone()), Some(v5.clone()))
    );
    // Newer: replaces, under both keys.
    let v6 = cached(id, t, "p-1", 6);
    c.put(&v6).await.unwrap();
    assert_eq!(
        cached_both(c, &v6).await,
        (Some(v6.clone()), Some(v6.clone()))
    );
    c.put(&v5).await.unwrap();
    assert_eq!(cached_both(c, &v6).await, (Some(v6.clone()), Some(v6)));
}

/// A deterministic shuffle (an LCG; the order only has to be scrambled, not random).
fn shuffled<T>(mut items: Vec<T>, seed: u64) -> Vec<T> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    for i in (1..items.len()).rev() {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        items.swap(i, ((x >> 33) % (i as u64 + 1)) as usize);
    }
    items
}

async fn cache_concurrent_shuffled_puts_keep_the_newest(b: CacheBackend) {
    const INSTANCES: usize = 8;
    const VERSIONS: i64 = 40;
    const WRITERS: usize = 8;
    let f = b.open(Duration::from_secs(60)).await;
    let t = Uuid::now_v7();
    for round in 0..3_u64 {
        let ids: Vec<Uuid> = (0..INSTANCES).map(|_| Uuid::now_v7()).collect();
        let mut puts = Vec::new();
        for (k, id) in ids.iter().enumerate() {
            for v in 1..=VERSIONS {
                puts.push(cached(*id, t, &format!("r{round}-{k}"), v));
            }
        }
        let puts = shuffled(puts, round + 1);
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let cache = f.cache.clone();
            let mine: Vec<InstanceRecord> = puts.iter().skip(w).step_by(WRITERS).cloned().collect();
            tasks.push(tokio::spawn(async move {
                for r in mine {
                    cache.put(&r).await.expect("put");
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        for (k, id) in ids.iter().enumerate() {
            let newest = cached(*id, t, &format!("r{round}-{k}"), VERSIONS);
            assert_eq!(
                cached_both(f.cache.as_ref(), &newest).await,
                (Some(newest.clone()), Some(newest)),
                "round {round}, instance {k}"
            );
        }
    }
}

mod redis_only {
    use std::time::Instant;

    use super::*;

    /// Entries carry the TTL (read from Redis, not timed) and are gone once it has passed,
    /// waited for with a generous bound rather than a fixed sleep.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn entries_expire_after_the_ttl() {
        use temporal_state_server::adapters::redis::{external_key, id_key};
        let ttl = Duration::from_secs(2);
        let f = CacheBackend::Redis.open(ttl).await;
        let redis = f.redis.as_ref().unwrap();
        let c = f.cache.as_ref();
        let r = cached(Uuid::now_v7(), Uuid::now_v7(), "p-1", 2);
        c.put(&r).await.unwrap();
        for key in [id_key(r.id), external_key(r.entity_type_id, "p-1")] {
            let pttl: i64 = redis.command(&["PTTL", &key]).parse().unwrap();
            assert!(
                pttl > 0 && pttl <= ttl.as_millis() as i64,
                "{key}: PTTL {pttl}"
            );
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while cached_both(c, &r).await != (None, None) {
            assert!(Instant::now() < deadline, "the entry never expired");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Once expired, any version may be cached again.
        let older = cached(r.id, r.entity_type_id, "p-1", 1);
        c.put(&older).await.unwrap();
        assert_eq!(cached_both(c, &older).await.0, Some(older));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopped_redis_errs_promptly_and_recovers() {
        let mut f = CacheBackend::Redis.open(Duration::from_secs(60)).await;
        let c = f.cache.clone();
        let r = cached(Uuid::now_v7(), Uuid::now_v7(), "p-1", 1);
        c.put(&r).await.unwrap();
        f.redis.as_mut().unwrap().stop();
        // Every call answers Err instead of waiting for Redis; the bound, far above the command
        // timeout, only turns a hang into a failure.
        errs_without_hanging(c.as_ref(), &r).await;
        // Started again (empty: nothing is persisted), the same cache works again by itself.
        f.redis.as_mut().unwrap().restart();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match c.get(r.id).await {
                Ok(found) => {
                    assert_eq!(found, None);
                    break;
                }
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("redis did not come back: {e}"),
            }
        }
        let v3 = cached(r.id, r.entity_type_id, "p-1", 3);
        c.put(&v3).await.unwrap();
        assert_eq!(
            cached_both(c.as_ref(), &v3).await,
            (Some(v3.clone()), Some(v3))
        );
    }

    /// Each of get, get_by_external_id and put errs, three times, each within a bound far above
    /// REDIS_TIMEOUT: only a call that waits on Redis for ever reaches it.
    async fn errs_without_hanging(c: &dyn StateCache, r: &InstanceRecord) {
        let bound = 10 * REDIS_TIMEOUT;
        let newer = cached(r.id, r.entity_type_id, "p-1", r.version + 1);
        for _ in 0..3 {
            let get = tokio::time::timeout(bound, c.get(r.id)).await;
            assert!(matches!(get, Ok(Err(_))), "get: {get:?}");
            let by_external =
                tokio::time::timeout(bound, c.get_by_external_id(r.entity_type_id, "p-1")).await;
            assert!(
                matches!(by_external, Ok(Err(_))),
                "get_by_external_id: {by_external:?}"
            );
            let put = tokio::time::timeout(bound, c.put(&newer)).await;
            assert!(matches!(put, Ok(Err(_))), "put: {put:?}");
        }
    }

    /// A Redis that hangs (SIGSTOP) rather than refuses: every call errs at the command timeout,
    /// and once it runs again the same cache works by itself, with what it held.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hanging_redis_errs_at_the_timeout_and_recovers() {
        let f = CacheBackend::Redis.open(Duration::from_secs(60)).await;
        let c = f.cache.clone();
        let r = cached(Uuid::now_v7(), Uuid::now_v7(), "p-1", 1);
        c.put(&r).await.unwrap();
        let redis = f.redis.as_ref().unwrap();
        redis.pause();
        errs_without_hanging(c.as_ref(), &r).await;
        redis.resume();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match c.get(r.id).await {
                // The queued puts of version 2 ran once Redis resumed; either is fine here.
                Ok(Some(found)) => {
                    assert!(found.version >= 1, "{found:?}");
                    break;
                }
                other => {
                    assert!(
                        Instant::now() < deadline,
                        "redis did not come back: {other:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        let v3 = cached(r.id, r.entity_type_id, "p-1", 3);
        c.put(&v3).await.unwrap();
        assert_eq!(
            cached_both(c.as_ref(), &v3).await,
            (Some(v3.clone()), Some(v3))
        );
    }
}

async fn cache_erase_keeps_only_the_erased_record_by_id(b: CacheBackend) {
    let f = b.open(Duration::from_secs(60)).await;
    let c = f.cache.as_ref();
    let (id, t) = (Uuid::now_v7(), Uuid::now_v7());
    let v5 = cached(id, t, "someone@example.org", 5);
    c.put(&v5).await.unwrap();
    let erased = InstanceRecord {
        external_id: String::new(),
        state: obj(json!({})),
        version: 6,
        archived: false,
        erased: true,
        ..v5.clone()
    };
    c.erase(&erased, &v5.external_id).await.unwrap();
    assert_eq!(c.get(id).await.unwrap(), Some(erased.clone()));
    assert_eq!(
        c.get_by_external_id(t, &v5.external_id).await.unwrap(),
        None,
        "the entry by the former external id is gone"
    );
    // A state read before the erasure, put after it, is refused by id.
    c.put(&v5).await.unwrap();
    assert_eq!(c.get(id).await.unwrap(), Some(erased.clone()));
    // Erasing again (a retry, the former external id unknown) keeps the erased record.
    c.erase(&erased, "").await.unwrap();
    assert_eq!(c.get(id).await.unwrap(), Some(erased));
}
