//! Retention (RETENTION_DAYS) that keeps time travel honest: history recorded before the
//! horizon is dropped, but never what rebuilding a current state needs.
//!
//! The horizon follows `recorded_at`, the server's clock, as time travel does: it never
//! decreases within an instance, so what is dropped of an instance is always a prefix of its
//! versions, whatever business times (`occurred_at`) clients sent. For each instance, the
//! version kept is the last one recorded before the horizon (or an earlier one still waiting
//! to be published): its state is made a snapshot first, then older events and snapshots are
//! deleted, a bounded batch at a time. That version keeps its event too, so history, diffs and
//! states from it on are answered as before, and a state at any moment from the horizon on.
//!
//! The horizon is stored before anything is deleted and only moves forward: time travel before
//! it answers OUT_OF_RANGE naming it, and analytics report it as the start of what they cover.
//! Idempotency keys are kept: a retry of a dropped event is refused, never applied twice.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::{info, warn};
use uuid::Uuid;

use super::AppError;
use super::metrics;
use super::queries::fold;
use crate::domain::State;
use crate::ports::{HistoryReader, RetentionStore, Trim};

/// How much one retention transaction may do.
#[derive(Debug, Clone, Copy)]
pub struct RetentionBatch {
    /// Instances examined (and at most trimmed) per round.
    pub instances: usize,
    /// Events deleted per transaction at most.
    pub events: usize,
}

impl Default for RetentionBatch {
    fn default() -> Self {
        Self {
            instances: 100,
            events: 10_000,
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionReport {
    /// The horizon in force after the pass (a later one, if another pass already set it).
    pub horizon: DateTime<Utc>,
    /// Instances that lost events or snapshots.
    pub instances: u64,
    pub events_deleted: u64,
    pub snapshots_deleted: u64,
    /// Snapshots written at the kept versions that had none.
    pub snapshots_written: u64,
    /// TimescaleDB chunks dropped once empty.
    pub chunks_dropped: u64,
    /// Another server was running retention: this pass stopped early and left the rest to it.
    pub busy: bool,
}

/// The retention use case, over the store's retention port and the history (to rebuild the
/// states it keeps as snapshots).
#[derive(Clone)]
pub struct Retention {
    store: Arc<dyn RetentionStore>,
    history: Arc<dyn HistoryReader>,
}

impl Retention {
    pub fn new(store: Arc<dyn RetentionStore>, history: Arc<dyn HistoryReader>) -> Self {
        Self { store, history }
    }

    /// One pass: drops what was recorded before `horizon` (or the later horizon already in
    /// force), keeping each instance's state at its last version before it.
    pub async fn run(
        &self,
        horizon: DateTime<Utc>,
        batch: RetentionBatch,
    ) -> Result<RetentionReport, AppError> {
        let horizon = self.store.advance_horizon(horizon).await?;
        ::metrics::gauge!(metrics::RETENTION_HORIZON).set(horizon.timestamp() as f64);
        let mut report = RetentionReport {
            horizon,
            instances: 0,
            events_deleted: 0,
            snapshots_deleted: 0,
            snapshots_written: 0,
            chunks_dropped: 0,
            busy: false,
        };
        let mut after = Uuid::nil();
        loop {
            let (candidates, last) = self
                .store
                .retention_candidates(horizon, after, batch.instances.max(1))
                .await?;
            let Some(last) = last else { break };
            after = last;
            let mut trims = Vec::with_capacity(candidates.len());
            for c in candidates {
                let snapshot = if c.has_snapshot {
                    None
                } else if c.erased {
                    // Its payloads are destroyed: the state it keeps is the empty one it has.
                    Some(State::new())
                } else {
                    let (snapshot, tail) = self
                        .history
                        .snapshot_and_tail(c.instance_id, c.keep)
                        .await?;
                    match fold(snapshot, &tail, c.keep)? {
                        Some(at) => Some(at.state),
                        None => {
                            // Nothing of it is dropped without the snapshot; say so and go on.
                            warn!(instance_id = %c.instance_id, version = c.keep, "retention skipped an instance whose kept state cannot be rebuilt");
                            continue;
                        }
                    }
                };
                trims.push(Trim {
                    instance_id: c.instance_id,
                    keep: c.keep,
                    snapshot,
                });
            }
            if trims.is_empty() {
                continue;
            }
            loop {
                let done = self.store.trim(&trims, batch.events.max(1)).await?;
                if done.busy {
                    info!("another server is running retention; this pass leaves the rest to it");
                    report.busy = true;
                    return Ok(report);
                }
                report.events_deleted += done.events_deleted;
                report.snapshots_deleted += done.snapshots_deleted;
                report.snapshots_written += done.snapshots_written;
                ::metrics::counter!(metrics::RETENTION_EVENTS_DELETED)
                    .increment(done.events_deleted);
                ::metrics::counter!(metrics::RETENTION_SNAPSHOTS_DELETED)
                    .increment(done.snapshots_deleted);
                if !done.more {
                    break;
                }
                // The snapshots are stored now; the next rounds only delete.
                for t in &mut trims {
                    t.snapshot = None;
                }
            }
            report.instances += trims.len() as u64;
        }
        report.chunks_dropped = self.store.reclaim(horizon).await?;
        info!(
            horizon = %horizon.to_rfc3339(),
            instances = report.instances,
            events_deleted = report.events_deleted,
            snapshots_deleted = report.snapshots_deleted,
            snapshots_written = report.snapshots_written,
            chunks_dropped = report.chunks_dropped,
            "retention pass done"
        );
        Ok(report)
    }
}
