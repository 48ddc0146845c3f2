//! Rate limits per principal: a token bucket for each caller (RATE_LIMIT_PER_SECOND, with
//! RATE_LIMIT_BURST calls of credit), checked by the authentication layer once it knows who
//! calls. Over the limit a call is answered RESOURCE_EXHAUSTED at once, with a
//! `google.rpc.RetryInfo` saying when the next call will be taken, and nothing runs.
//!
//! The caller is the principal's name (an API key's name, a JWT's subject). Without
//! authentication everyone is the same anonymous principal, so the bucket is the peer's IP
//! address instead: one noisy client must not starve the others.
//!
//! Memory is bounded: at most [`MAX_BUCKETS`] callers are tracked. When the table is full, the
//! buckets that have refilled completely (their callers have been idle) are dropped, which loses
//! nothing: a full bucket and a new one are the same. If every tracked caller is active, the
//! oldest bucket is dropped; that caller starts again with a full burst, which only errs on the
//! side of letting calls through.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt};

pub use crate::config::RateLimit;

/// Most callers tracked at once.
pub const MAX_BUCKETS: usize = 100_000;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The buckets of every caller.
pub struct RateLimiter {
    limit: RateLimit,
    max_buckets: usize,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self::with_capacity(limit, MAX_BUCKETS)
    }

    fn with_capacity(limit: RateLimit, max_buckets: usize) -> Self {
        assert!(limit.per_second > 0.0 && limit.burst >= 1);
        Self {
            limit,
            max_buckets: max_buckets.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one call of `caller`'s credit, or says how long until there is one.
    pub fn take(&self, caller: &str, now: Instant) -> Result<(), Duration> {
        let RateLimit { per_second, burst } = self.limit;
        let burst = f64::from(burst);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !buckets.contains_key(caller) && buckets.len() >= self.max_buckets {
            let full_after = Duration::from_secs_f64(burst / per_second);
            buckets.retain(|_, b| now.saturating_duration_since(b.at) < full_after);
            if buckets.len() >= self.max_buckets
                && let Some(oldest) = buckets
                    .iter()
                    .min_by_key(|(_, b)| b.at)
                    .map(|(k, _)| k.clone())
            {
                buckets.remove(&oldest);
            }
        }
        let bucket = buckets.entry(caller.to_string()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(burst);
        bucket.at = now.max(bucket.at);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_second))
        }
    }

    /// The answer to a call over the limit.
    pub fn refusal(&self, caller: &str, retry_after: Duration) -> Status {
        // Round up to whole milliseconds: retrying a little early would only be refused again.
        let retry_after = Duration::from_millis(retry_after.as_millis() as u64 + 1);
        Status::with_error_details(
            tonic::Code::ResourceExhausted,
            format!(
                "rate limit exceeded for {caller}: at most {} calls per second (bursts of {}); \
                 retry in {} ms",
                self.limit.per_second,
                self.limit.burst,
                retry_after.as_millis()
            ),
            ErrorDetails::with_retry_info(Some(retry_after)),
        )
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_second: f64, burst: u32) -> RateLimiter {
        RateLimiter::new(RateLimit { per_second, burst })
    }

    #[test]
    fn a_burst_then_the_steady_rate() {
        let l = limiter(10.0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            l.take("a", t0).unwrap();
        }
        let wait = l.take("a", t0).unwrap_err();
        assert!(
            (wait.as_secs_f64() - 0.1).abs() < 1e-6,
            "one call's credit at 10/s is 100 ms away, not {wait:?}"
        );
        // 100 ms later one call is allowed again, and only one.
        let t1 = t0 + Duration::from_millis(100);
        l.take("a", t1).unwrap();
        assert!(l.take("a", t1).is_err());
        // A long idle time refills to the burst, never beyond.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            l.take("a", t2).unwrap();
        }
        assert!(l.take("a", t2).is_err());
    }

    #[test]
    fn callers_have_their_own_buckets() {
        let l = limiter(1.0, 1);
        let t = Instant::now();
        l.take("a", t).unwrap();
        assert!(l.take("a", t).is_err());
        l.take("b", t).unwrap();
    }

    #[test]
    fn the_table_stays_bounded_and_idle_buckets_go_first() {
        let l = RateLimiter::with_capacity(
            RateLimit {
                per_second: 1.0,
                burst: 2,
            },
            3,
        );
        let t0 = Instant::now();
        l.take("busy", t0).unwrap();
        l.take("busy", t0).unwrap();
        l.take("idle-1", t0).unwrap();
        l.take("idle-2", t0).unwrap();
        // 5 s later the idle ones are full again (2 tokens at 1/s) and may go; "busy" is
        // refilled too, so every bucket goes and nothing is lost: all of them were full.
        let t1 = t0 + Duration::from_secs(5);
        l.take("new", t1).unwrap();
        assert!(l.tracked() <= 3);
        // When every tracked caller is active, the oldest bucket makes room.
        let l = RateLimiter::with_capacity(
            RateLimit {
                per_second: 1.0,
                burst: 2,
            },
            2,
        );
        l.take("a", t0).unwrap();
        l.take("b", t0 + Duration::from_millis(10)).unwrap();
        l.take("c", t0 + Duration::from_millis(20)).unwrap();
        assert_eq!(l.tracked(), 2);
    }

    #[test]
    fn the_refusal_carries_the_retry_delay() {
        let l = limiter(2.0, 1);
        let status = l.refusal("key ci", Duration::from_millis(499));
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains("key ci"), "{}", status.message());
        let info = status.get_details_retry_info().expect("RetryInfo detail");
        assert_eq!(info.retry_delay, Some(Duration::from_millis(500)));
    }
}
