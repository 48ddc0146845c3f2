//! How calls answered with UNAVAILABLE are retried: exponential backoff with jitter, bounded in
//! attempts. Only UNAVAILABLE is retried; every other code is an answer.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use crate::error::Error;

/// How a call is retried when it fails with [`Error::Unavailable`].
///
/// The wait before retry `n` (1-based) is `initial_backoff * multiplier^(n-1)`, capped at
/// `max_backoff`, and with jitter a random part of it is added so that many clients do not retry in
/// step. Retrying writes is safe: see [the crate docs](crate#retries-are-safe).
///
/// ```
/// use std::time::Duration;
/// use temporal_state_client::RetryPolicy;
///
/// // Up to 10 attempts, waiting 50 ms, 100 ms, 200 ms, ... at most 1 s between them.
/// let patient = RetryPolicy::default()
///     .max_attempts(10)
///     .initial_backoff(Duration::from_millis(50))
///     .max_backoff(Duration::from_secs(1));
/// assert_eq!(patient.attempts(), 10);
///
/// // Fail at the first UNAVAILABLE.
/// assert_eq!(RetryPolicy::none().attempts(), 1);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    multiplier: f32,
    jitter: bool,
}

impl Default for RetryPolicy {
    /// 4 attempts (3 retries), waiting 100 ms, then 200 ms, then 400 ms (each plus jitter), at
    /// most 5 s.
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            multiplier: 2.0,
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// No retry: the first UNAVAILABLE is returned.
    pub fn none() -> Self {
        Self::default().max_attempts(1)
    }

    /// Attempts in all, the first one included; at least 1. Default: 4.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Wait before the first retry. Default: 100 ms.
    pub fn initial_backoff(mut self, wait: Duration) -> Self {
        self.initial_backoff = wait;
        self
    }

    /// Longest wait between two attempts. Default: 5 s.
    pub fn max_backoff(mut self, wait: Duration) -> Self {
        self.max_backoff = wait;
        self
    }

    /// Factor by which the wait grows after each retry; at least 1. Default: 2.
    pub fn multiplier(mut self, factor: f32) -> Self {
        self.multiplier = factor.max(1.0);
        self
    }

    /// Whether a random part is added to each wait. Default: true.
    pub fn jitter(mut self, on: bool) -> Self {
        self.jitter = on;
        self
    }

    /// Attempts in all, the first one included.
    pub fn attempts(&self) -> u32 {
        self.max_attempts
    }

    fn backoff(&self) -> ExponentialBuilder {
        let b = ExponentialBuilder::default()
            .with_min_delay(self.initial_backoff)
            .with_max_delay(self.max_backoff.max(self.initial_backoff))
            .with_factor(self.multiplier)
            .with_max_times(self.max_attempts.saturating_sub(1) as usize);
        if self.jitter { b.with_jitter() } else { b }
    }

    /// Runs `attempt` until it succeeds, fails with something other than UNAVAILABLE, or the
    /// attempts run out. Returns the outcome and how many attempts were made.
    pub(crate) async fn run<T, F, Fut>(
        &self,
        call: &'static str,
        mut attempt: F,
    ) -> (Result<T, Error>, u32)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let mut made = 0u32;
        let result = (|| {
            made += 1;
            attempt()
        })
        .retry(self.backoff())
        .when(Error::is_retryable)
        .notify(|error, wait| {
            tracing::debug!(call, %error, ?wait, "unavailable; retrying");
        })
        .await;
        (result, made)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unavailable_is_retried_until_the_attempts_run_out() {
        let policy = RetryPolicy::default()
            .max_attempts(3)
            .initial_backoff(Duration::from_millis(1));
        let (result, made) = policy
            .run("test", || async {
                Err::<(), _>(Error::from(tonic::Status::unavailable("down")))
            })
            .await;
        assert!(matches!(result, Err(Error::Unavailable { .. })));
        assert_eq!(made, 3);
    }

    #[tokio::test]
    async fn other_codes_are_not_retried() {
        let (result, made) = RetryPolicy::default()
            .run("test", || async {
                Err::<(), _>(Error::from(tonic::Status::aborted("conflict")))
            })
            .await;
        assert!(matches!(result, Err(Error::Conflict { .. })));
        assert_eq!(made, 1);
    }

    #[tokio::test]
    async fn a_success_after_failures_is_returned() {
        let mut failures = 2;
        let (result, made) = RetryPolicy::default()
            .initial_backoff(Duration::from_millis(1))
            .run("test", || {
                let fail = failures > 0;
                failures -= 1;
                async move {
                    if fail {
                        Err(Error::from(tonic::Status::unavailable("down")))
                    } else {
                        Ok(7)
                    }
                }
            })
            .await;
        assert_eq!(result.unwrap(), 7);
        assert_eq!(made, 3);
    }
}
