//! The global event log through the SDK, on PostgreSQL (with and without NATS) and on the
//! embedded store: a consumer reading from position 0 while 8 writers append to 100 instances
//! sees every event exactly once, in each instance's version order, including those committed
//! while it caught up; a second consumer, killed mid-way and restarted from its file
//! checkpoint, misses nothing and handles an event at most twice.

mod common;

#[allow(dead_code)] // the NATS helper only
#[path = "../../../server/tests/common/procs.rs"]
mod procs;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::json;
use temporal_state_client::*;

const INSTANCES: usize = 100;
const WRITERS: usize = 8;
const EVENTS_PER_WRITER: usize = 60;

#[derive(Clone, Copy, Debug)]
enum Backend {
    Postgres,
    PostgresNats,
    Embedded,
}

/// What a consumer's handler was given, in order: (position, instance, version).
type Seen = Arc<Mutex<Vec<(i64, String, i64)>>>;

fn recorder(
    seen: Seen,
) -> impl FnMut(Vec<Event>) -> std::future::Ready<Result<(), std::io::Error>> {
    move |batch| {
        let mut seen = seen.lock().unwrap();
        for e in batch {
            seen.push((e.position, e.instance_id, e.version));
        }
        std::future::ready(Ok(()))
    }
}

/// A file checkpoint that remembers the position its consumer started from. That is what the
/// restarted consumer must continue after, and the file alone cannot say: a save the killed
/// consumer had already handed to the blocking pool still completes (rename included) after its
/// task is aborted, so the file can move on after the kill.
struct StartedFrom {
    file: FileCheckpoint,
    loaded: Arc<Mutex<Option<i64>>>,
}

impl CheckpointStore for StartedFrom {
    async fn load(&self) -> temporal_state_client::Result<Option<i64>> {
        let position = self.file.load().await?;
        *self.loaded.lock().unwrap() = Some(position.unwrap_or(0));
        Ok(position)
    }

    async fn save(&self, position: i64) -> temporal_state_client::Result<()> {
        self.file.save(position).await
    }
}

/// Positions strictly increase, and each instance's versions come one after another from
/// `first[instance]` (1 when absent) with no gap and no repeat. Returns the last version of each.
fn check_order(
    what: &str,
    seen: &[(i64, String, i64)],
    first: &HashMap<String, i64>,
) -> HashMap<String, i64> {
    let mut last: HashMap<String, i64> = HashMap::new();
    let mut position = 0;
    for (p, id, v) in seen {
        assert!(*p > position, "{what}: position {p} after {position}");
        position = *p;
        let expected = last
            .get(id)
            .map_or_else(|| first.get(id).copied().unwrap_or(1), |l| l + 1);
        assert_eq!(
            *v, expected,
            "{what}: instance {id} version {v}, expected {expected}"
        );
        last.insert(id.clone(), *v);
    }
    last
}

async fn wait_for(seen: &Seen, n: usize, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while seen.lock().unwrap().len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {} of {n} events after 120 s",
            seen.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_consumer_sees_every_event_once_and_resumes_from_its_checkpoint(backend: Backend) {
    let db;
    let dir = tempfile::tempdir().unwrap();
    let nats;
    let server = match backend {
        Backend::Postgres => {
            db = TestDb::create().await;
            TestServer::start(&db.url, &[]).await
        }
        Backend::PostgresNats => {
            db = TestDb::create().await;
            nats = procs::Nats::start();
            let url = nats.url();
            TestServer::start(&db.url, &["--nats-url", &url]).await
        }
        Backend::Embedded => TestServer::start_embedded(dir.path(), &[]).await,
    };
    let client = server.client().await;
    client
        .create_entity_type("player_profile", &player_schema(), &Default::default())
        .await
        .unwrap();
    // Another type's events are in the log too, and filtered out.
    client
        .create_entity_type("team", &json!({"type": "object"}), &Default::default())
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..INSTANCES {
        let created = client
            .create_instance(
                "player_profile",
                &format!("player-{i:03}"),
                &json!({"username": format!("user{i:03}"), "email": format!("u{i}@example.com"), "score": 0}),
                &Default::default(),
            )
            .await
            .unwrap();
        ids.push(created.instance.id);
    }
    let team = client
        .create_instance("team", "red", &json!({}), &Default::default())
        .await
        .unwrap();
    let total = INSTANCES + WRITERS * EVENTS_PER_WRITER;

    // 8 writers, each on instances of its own choosing, paced so that they are still writing
    // while both consumers catch up.
    let ids = Arc::new(ids);
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let client = client.clone();
        let ids = ids.clone();
        let team = team.instance.id.clone();
        writers.push(tokio::spawn(async move {
            for k in 0..EVENTS_PER_WRITER {
                let id = &ids[(w * 37 + k * 13) % ids.len()];
                client
                    .apply_event(
                        id,
                        "ScoreIncreased",
                        &json!({"score": k}),
                        &Default::default(),
                    )
                    .await
                    .unwrap();
                if k % 10 == 0 {
                    client
                        .apply_event(&team, "Noise", &json!({"k": k}), &Default::default())
                        .await
                        .unwrap();
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;

    let options = ConsumerOptions::default()
        .entity_types(["player_profile"])
        .batch_size(37);
    // Consumer A: from position 0, never stopped.
    let seen_a: Seen = Arc::default();
    let checkpoint_a = FileCheckpoint::new(dir.path().join("a.checkpoint"));
    let consumer_a = {
        let client = client.clone();
        let options = options.clone();
        let seen = seen_a.clone();
        tokio::spawn(async move {
            client
                .run_consumer(&checkpoint_a, &options, recorder(seen))
                .await
        })
    };
    // Consumer B: killed (its task aborted, nothing flushed) a third of the way, then restarted
    // from its checkpoint.
    let seen_b1: Seen = Arc::default();
    let path_b = dir.path().join("b.checkpoint");
    let consumer_b = {
        let client = client.clone();
        let options = options.clone();
        let seen = seen_b1.clone();
        let checkpoint = FileCheckpoint::new(&path_b);
        tokio::spawn(async move {
            client
                .run_consumer(&checkpoint, &options, recorder(seen))
                .await
        })
    };
    wait_for(&seen_b1, total / 3, "consumer B before its kill").await;
    consumer_b.abort();
    let _ = consumer_b.await;
    let seen_b2: Seen = Arc::default();
    let started_from: Arc<Mutex<Option<i64>>> = Arc::default();
    let mut consumer_b2 = {
        let client = client.clone();
        let options = options.clone();
        let seen = seen_b2.clone();
        let checkpoint = StartedFrom {
            file: FileCheckpoint::new(&path_b),
            loaded: started_from.clone(),
        };
        tokio::spawn(async move {
            client
                .run_consumer(&checkpoint, &options, recorder(seen))
                .await
        })
    };
    for w in writers {
        w.await.unwrap();
    }

    // Consumer A: every event exactly once, in version order per instance.
    wait_for(&seen_a, total, "consumer A").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a = seen_a.lock().unwrap().clone();
    assert_eq!(
        a.len(),
        total,
        "consumer A saw events more than once or of another type"
    );
    let last = check_order("consumer A", &a, &HashMap::new());
    assert_eq!(last.len(), INSTANCES);
    let stored: usize = last.values().map(|v| *v as usize).sum();
    assert_eq!(stored, total, "consumer A missed events");
    // Those committed while it was catching up are in: the writers ran until after it started.
    assert!(!consumer_a.is_finished(), "consumer A stopped");

    // Consumer B: what it saw before the kill, then from its checkpoint on, covers everything;
    // only events after the checkpoint can come twice, and none more than twice.
    let b1 = seen_b1.lock().unwrap().clone();
    check_order("consumer B before the kill", &b1, &HashMap::new());
    wait_for(&seen_b2, 1, "consumer B after its restart").await;
    let saved = started_from
        .lock()
        .unwrap()
        .expect("the restarted consumer loaded its checkpoint");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let b2 = seen_b2.lock().unwrap().clone();
        let mut union: HashSet<(String, i64)> =
            b1.iter().map(|(_, i, v)| (i.clone(), *v)).collect();
        union.extend(b2.iter().map(|(_, i, v)| (i.clone(), *v)));
        if union.len() == total {
            break;
        }
        if consumer_b2.is_finished() {
            let ended = (&mut consumer_b2).await;
            panic!(
                "consumer B stopped after its restart with {} of {total} events: {ended:?}",
                union.len()
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "consumer B: {} of {total} events",
            union.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let b2 = seen_b2.lock().unwrap().clone();
    assert!(
        b2.iter().all(|(p, _, _)| *p > saved),
        "restarted before its checkpoint {saved}"
    );
    // After the restart, each instance continues from the first version after the checkpoint.
    let mut first: HashMap<String, i64> = HashMap::new();
    let mut before: BTreeMap<String, i64> = BTreeMap::new();
    for (p, id, v) in &b1 {
        if *p <= saved {
            before.insert(id.clone(), *v);
        }
    }
    for (id, v) in &before {
        first.insert(id.clone(), v + 1);
    }
    check_order("consumer B after the restart", &b2, &first);
    let mut handled: HashMap<(String, i64), usize> = HashMap::new();
    for (_, i, v) in b1.iter().chain(&b2) {
        *handled.entry((i.clone(), *v)).or_default() += 1;
    }
    assert!(
        handled.values().all(|n| *n <= 2),
        "an event was handled more than twice"
    );
    let twice = handled.values().filter(|n| **n == 2).count();
    assert!(
        twice <= 37 * 2,
        "{twice} events handled twice, more than the unsaved batch"
    );
    consumer_a.abort();
    consumer_b2.abort();

    // ReadEvents by event type and by all types agrees with what the consumers saw.
    let noise = client
        .read_events(
            0,
            &ReadEventsOptions::default()
                .event_types(["Noise"])
                .page_size(1000),
        )
        .await
        .unwrap();
    assert_eq!(noise.events.len(), WRITERS * EVENTS_PER_WRITER.div_ceil(10));
    assert!(
        noise
            .events
            .iter()
            .all(|e| e.instance_id == team.instance.id)
    );
    let mut everything = Vec::new();
    let mut from = 0;
    loop {
        let page = client
            .read_events(from, &ReadEventsOptions::default().page_size(1000))
            .await
            .unwrap();
        everything.extend(page.events);
        from = page.next_position;
        if from >= page.head_position {
            break;
        }
    }
    assert_eq!(everything.len(), total + 1 + noise.events.len());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_consumer() {
    a_consumer_sees_every_event_once_and_resumes_from_its_checkpoint(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_with_nats_consumer() {
    a_consumer_sees_every_event_once_and_resumes_from_its_checkpoint(Backend::PostgresNats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_consumer() {
    a_consumer_sees_every_event_once_and_resumes_from_its_checkpoint(Backend::Embedded).await;
}
