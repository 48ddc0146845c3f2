//! What every per-call options struct shares: the call's deadline and retry policy, each
//! defaulting to the client's.

use std::time::Duration;

use crate::retry::RetryPolicy;

/// The settings every call has; `None` means the client's default.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct CallOptions {
    pub(crate) timeout: Option<Duration>,
    pub(crate) retry: Option<RetryPolicy>,
}

/// Adds `timeout` and `retry` to a per-call options struct that has a `call: CallOptions` field.
macro_rules! call_options {
    ($options:ident) => {
        impl $options {
            /// Deadline of each attempt of this call, sent to the server as the gRPC deadline
            /// too. Default: the client's request timeout
            /// ([`ClientBuilder::request_timeout`](crate::ClientBuilder::request_timeout), 30 s).
            pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
                self.call.timeout = Some(timeout);
                self
            }

            /// How this call is retried when answered UNAVAILABLE. Default: the client's policy
            /// ([`ClientBuilder::retry`](crate::ClientBuilder::retry)).
            pub fn retry(mut self, policy: crate::RetryPolicy) -> Self {
                self.call.retry = Some(policy);
                self
            }
        }
    };
}

pub(crate) use call_options;
