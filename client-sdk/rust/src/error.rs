//! Typed errors, rebuilt from the gRPC status the server answers with: the code chooses the
//! variant, the details (`google.rpc.BadRequest`, `google.rpc.ErrorInfo`) and the message fill it.

use tonic::Code;
use tonic_types::StatusExt;

/// The result of every call of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One rule a request broke, as the server reported it (`google.rpc.BadRequest.FieldViolation`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Where: a JSON pointer into the offending document (`/score`), or a request field
    /// (`name`, `payload`). Empty for the document's root.
    pub field: String,
    /// What is wrong, for humans.
    pub description: String,
}

/// Why a call failed.
///
/// The first variants mirror the gRPC codes the server answers with (see the
/// [API's error contract](https://github.com/temporal-state/temporal-state-engine#errors));
/// the last ones are failures on the client's side. Match on the variants you handle and keep a
/// catch-all arm: new variants may be added.
///
/// ```
/// use temporal_state_client::Error;
///
/// fn explain(error: &Error) -> String {
///     match error {
///         Error::Conflict { current_version: Some(v), .. } => format!("someone else wrote; now at version {v}"),
///         Error::InvalidArgument { violations, .. } => violations
///             .iter()
///             .map(|v| format!("{}: {}", v.field, v.description))
///             .collect::<Vec<_>>()
///             .join("; "),
///         Error::NotFound { message } => format!("missing: {message}"),
///         other => other.to_string(),
///     }
/// }
/// # let e = Error::from(tonic::Status::not_found("instance x not found"));
/// # assert_eq!(explain(&e), "missing: instance x not found");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// INVALID_ARGUMENT: bad input, or a state that breaks the entity type's JSON Schema. Nothing
    /// was stored. Each broken rule is in `violations`.
    #[error("invalid argument: {message}")]
    InvalidArgument {
        /// The server's message (it names every violation too).
        message: String,
        /// Each broken rule, from the status details.
        violations: Vec<FieldViolation>,
    },
    /// NOT_FOUND: the entity type, instance or version does not exist (or, for a state at a
    /// time, the instance did not exist yet).
    #[error("not found: {message}")]
    NotFound {
        /// The server's message, naming what is missing.
        message: String,
    },
    /// ALREADY_EXISTS: the name or (entity type, external id) is taken, or an `event_id` was
    /// reused with different content.
    #[error("already exists: {message}")]
    AlreadyExists {
        /// The server's message, naming what exists.
        message: String,
    },
    /// ABORTED: `expected_version` was set and is not the instance's current version. Read the
    /// state again, decide, and retry with `current_version`.
    #[error("version conflict: {message}")]
    Conflict {
        /// The server's message.
        message: String,
        /// The version the call expected, when the server said so.
        expected_version: Option<i64>,
        /// The instance's version when the call was refused, when the server said so (it does).
        current_version: Option<i64>,
    },
    /// RESOURCE_EXHAUSTED: a payload, schema or batch over the server's limits.
    #[error("resource exhausted: {message}")]
    ResourceExhausted {
        /// The server's message, naming the limit.
        message: String,
    },
    /// UNAVAILABLE: the server or one of its backends is down, the connection failed, or the
    /// server closed the connection (GOAWAY, as a server shutting down does) before it took the
    /// call. Safe to retry; the client already did, as many times as its
    /// [`RetryPolicy`](crate::RetryPolicy) allows.
    #[error("unavailable: {message}")]
    Unavailable {
        /// The server's or the transport's message.
        message: String,
    },
    /// DEADLINE_EXCEEDED: no answer within the call's timeout.
    #[error("deadline exceeded: {message}")]
    DeadlineExceeded {
        /// Which deadline passed.
        message: String,
    },
    /// OUT_OF_RANGE: the history asked for lies before the server's retention horizon
    /// (RETENTION_DAYS), which the message names; what is kept can still be asked for.
    #[error("out of range: {message}")]
    OutOfRange {
        /// The server's message, naming the horizon.
        message: String,
    },
    /// UNIMPLEMENTED: this server does not offer the call (yet).
    #[error("unimplemented: {message}")]
    Unimplemented {
        /// The server's message.
        message: String,
    },
    /// INTERNAL: a bug on the server. Its cause is in the server's log, never in the answer.
    #[error("internal server error: {message}")]
    Internal {
        /// The server's (generic) message.
        message: String,
    },
    /// DATA_LOSS: the server found its stored data damaged; its log names the file or table.
    /// Retrying cannot help: the data must be restored from a backup.
    #[error("stored data is damaged: {message}")]
    DataLoss {
        /// The server's (generic) message.
        message: String,
    },
    /// UNAUTHENTICATED: the server requires credentials and got none, or an invalid, expired or
    /// revoked one (see [`ClientBuilder::bearer_token`](crate::ClientBuilder::bearer_token)).
    #[error("unauthenticated: {message}")]
    Unauthenticated {
        /// Why the credentials were refused.
        message: String,
    },
    /// PERMISSION_DENIED: the credentials are valid but no scope of theirs allows this call.
    /// Nothing was done.
    #[error("permission denied: {message}")]
    PermissionDenied {
        /// Which scope the call needs.
        message: String,
    },
    /// Any other gRPC code (CANCELLED, ...), for example from a proxy in front of the server.
    #[error("{code:?}: {message}")]
    Rpc {
        /// The gRPC code.
        code: Code,
        /// The message that came with it.
        message: String,
    },
    /// The endpoint could not be reached when connecting ([`ClientBuilder::connect`](crate::ClientBuilder::connect)).
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        /// The endpoint as given.
        endpoint: String,
        /// The transport's reason.
        #[source]
        source: tonic::transport::Error,
    },
    /// The endpoint or a connection setting is malformed.
    #[error("invalid endpoint {endpoint}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A value given to a call cannot be sent: it does not serialize, or is not a JSON object
    /// where the API needs one (states, payloads, metadata, schemas).
    #[error("cannot encode {what}: {reason}")]
    Encode {
        /// Which argument.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A value the server sent does not fit: a state that does not deserialize into the type
    /// asked for, or a malformed answer.
    #[error("cannot decode {what}: {reason}")]
    Decode {
        /// Which value.
        what: String,
        /// Why.
        reason: String,
    },
}

impl Error {
    /// Rebuilds the typed error from a status, reading its details where the code has some.
    ///
    /// ```
    /// use temporal_state_client::Error;
    ///
    /// let status = tonic::Status::aborted("expected version 1 but instance is at version 2");
    /// match Error::from_status(status) {
    ///     Error::Conflict { expected_version, current_version, .. } => {
    ///         assert_eq!((expected_version, current_version), (Some(1), Some(2)));
    ///     }
    ///     other => panic!("{other}"),
    /// }
    /// ```
    pub fn from_status(status: tonic::Status) -> Self {
        let message = status.message().to_string();
        if refused_by_goaway(&status) {
            return Self::Unavailable { message };
        }
        match status.code() {
            Code::InvalidArgument => Self::InvalidArgument {
                violations: status
                    .get_details_bad_request()
                    .map(|b| {
                        b.field_violations
                            .into_iter()
                            .map(|v| FieldViolation {
                                field: v.field,
                                description: v.description,
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                message,
            },
            Code::NotFound => Self::NotFound { message },
            Code::AlreadyExists => Self::AlreadyExists { message },
            Code::Aborted => {
                let info = status.get_details_error_info();
                let from_info = |key: &str| {
                    info.as_ref()
                        .and_then(|i| i.metadata.get(key))
                        .and_then(|v| v.parse().ok())
                };
                Self::Conflict {
                    expected_version: from_info("expected_version")
                        .or_else(|| number_after(&message, "expected version ")),
                    current_version: from_info("current_version")
                        .or_else(|| number_after(&message, "at version ")),
                    message,
                }
            }
            Code::ResourceExhausted => Self::ResourceExhausted { message },
            Code::Unavailable => Self::Unavailable { message },
            Code::DeadlineExceeded => Self::DeadlineExceeded { message },
            // tonic's own enforcement of the deadline reports CANCELLED ("Timeout expired").
            Code::Cancelled if caused_by_timeout(&status) => Self::DeadlineExceeded { message },
            Code::Unimplemented => Self::Unimplemented { message },
            Code::Unauthenticated => Self::Unauthenticated { message },
            Code::PermissionDenied => Self::PermissionDenied { message },
            Code::Internal => Self::Internal { message },
            Code::DataLoss => Self::DataLoss { message },
            Code::OutOfRange => Self::OutOfRange { message },
            code => Self::Rpc { code, message },
        }
    }

    /// The gRPC code this error stands for; `None` for the client's own failures (encoding,
    /// decoding, a malformed endpoint), which never reached the server.
    ///
    /// ```
    /// use temporal_state_client::Error;
    ///
    /// let e = Error::from(tonic::Status::already_exists("taken"));
    /// assert_eq!(e.code(), Some(tonic::Code::AlreadyExists));
    /// ```
    pub fn code(&self) -> Option<Code> {
        Some(match self {
            Self::InvalidArgument { .. } => Code::InvalidArgument,
            Self::NotFound { .. } => Code::NotFound,
            Self::AlreadyExists { .. } => Code::AlreadyExists,
            Self::Conflict { .. } => Code::Aborted,
            Self::ResourceExhausted { .. } => Code::ResourceExhausted,
            Self::Unavailable { .. } | Self::Connect { .. } => Code::Unavailable,
            Self::DeadlineExceeded { .. } => Code::DeadlineExceeded,
            Self::Unimplemented { .. } => Code::Unimplemented,
            Self::Unauthenticated { .. } => Code::Unauthenticated,
            Self::PermissionDenied { .. } => Code::PermissionDenied,
            Self::Internal { .. } => Code::Internal,
            Self::DataLoss { .. } => Code::DataLoss,
            Self::OutOfRange { .. } => Code::OutOfRange,
            Self::Rpc { code, .. } => *code,
            Self::InvalidEndpoint { .. } | Self::Encode { .. } | Self::Decode { .. } => {
                return None;
            }
        })
    }

    /// Whether retrying the same call may succeed: true for UNAVAILABLE only. The client
    /// retries these itself (see [`RetryPolicy`](crate::RetryPolicy)); seeing one means the
    /// retries ran out.
    ///
    /// ```
    /// use temporal_state_client::Error;
    ///
    /// assert!(Error::from(tonic::Status::unavailable("down")).is_retryable());
    /// assert!(!Error::from(tonic::Status::aborted("conflict")).is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    pub(crate) fn decode(what: impl Into<String>, reason: impl ToString) -> Self {
        Self::Decode {
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn encode(what: &'static str, reason: impl ToString) -> Self {
        Self::Encode {
            what,
            reason: reason.to_string(),
        }
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Self::from_status(status)
    }
}

/// Whether the client's transport gave up waiting (tonic's `TimeoutExpired` in the chain).
fn caused_by_timeout(status: &tonic::Status) -> bool {
    causes(status).any(|e| e.is::<tonic::TimeoutExpired>())
}

/// The status's chain of causes, nearest first.
fn causes(status: &tonic::Status) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    std::iter::successors(std::error::Error::source(status), |e| e.source())
}

/// Whether the call failed because the server sent GOAWAY before it took the call's stream.
///
/// A server that shuts down gracefully (a rolling restart) answers the calls it took and sends
/// GOAWAY naming the last one; a call the client sent meanwhile is refused unprocessed. tonic
/// reports that as INTERNAL ("h2 protocol error"), which is not retried, yet HTTP/2 promises
/// such a stream was never processed (RFC 9113, 6.8), so it is UNAVAILABLE, and safe to send
/// again. h2 gives a stream this error (from the peer, reason NO_ERROR) only when its id is
/// above the GOAWAY's last stream id, or when it was opened after the GOAWAY arrived: a call
/// the server took and then lost to a closed connection fails with another error.
fn refused_by_goaway(status: &tonic::Status) -> bool {
    causes(status)
        .find_map(|e| e.downcast_ref::<h2::Error>())
        .is_some_and(|e| {
            e.is_go_away() && e.is_remote() && e.reason() == Some(h2::Reason::NO_ERROR)
        })
}

/// The integer right after the last `marker` in `text` (`"... at version 7"` -> 7).
fn number_after(text: &str, marker: &str) -> Option<i64> {
    let start = text.rfind(marker)? + marker.len();
    let digits: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '-')
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::{ErrorDetails, StatusExt};

    #[test]
    fn violations_come_from_bad_request_details() {
        let mut details = ErrorDetails::new();
        details.add_bad_request_violation("/score", "-5 is less than the minimum of 0");
        details.add_bad_request_violation("/email", "\"x\" is not an email");
        let status = tonic::Status::with_error_details(
            Code::InvalidArgument,
            "state does not satisfy the schema",
            details,
        );
        let Error::InvalidArgument { violations, .. } = Error::from(status) else {
            panic!("not InvalidArgument")
        };
        assert_eq!(
            violations,
            vec![
                FieldViolation {
                    field: "/score".into(),
                    description: "-5 is less than the minimum of 0".into()
                },
                FieldViolation {
                    field: "/email".into(),
                    description: "\"x\" is not an email".into()
                },
            ]
        );
    }

    #[test]
    fn conflict_versions_prefer_error_info_then_the_message() {
        let mut details = ErrorDetails::new();
        details.set_error_info(
            "VERSION_CONFLICT",
            "temporal-state",
            [
                ("expected_version".to_string(), "3".to_string()),
                ("current_version".to_string(), "9".to_string()),
            ],
        );
        let status = tonic::Status::with_error_details(
            Code::Aborted,
            "expected version 1 but instance is at version 2",
            details,
        );
        let Error::Conflict {
            expected_version,
            current_version,
            ..
        } = Error::from(status)
        else {
            panic!("not Conflict")
        };
        assert_eq!((expected_version, current_version), (Some(3), Some(9)));

        let Error::Conflict {
            expected_version,
            current_version,
            ..
        } = Error::from(tonic::Status::aborted("something else"))
        else {
            panic!("not Conflict")
        };
        assert_eq!((expected_version, current_version), (None, None));
    }

    #[test]
    fn damaged_data_is_its_own_variant_and_not_retried() {
        let e = Error::from(tonic::Status::data_loss("stored data is damaged"));
        assert!(matches!(e, Error::DataLoss { .. }), "{e:?}");
        assert_eq!(e.code(), Some(Code::DataLoss));
        assert!(!e.is_retryable());
    }

    #[test]
    fn before_the_retention_horizon_is_its_own_variant_and_not_retried() {
        let e = Error::from(tonic::Status::out_of_range(
            "version 3 was recorded before the retention horizon",
        ));
        assert!(matches!(e, Error::OutOfRange { .. }), "{e:?}");
        assert_eq!(e.code(), Some(Code::OutOfRange));
        assert!(!e.is_retryable());
    }

    #[test]
    fn codes_without_a_variant_keep_their_code() {
        // (PERMISSION_DENIED, the example here before, has had a variant since authentication.)
        let e = Error::from(tonic::Status::failed_precondition("no"));
        assert_eq!(e.code(), Some(Code::FailedPrecondition));
        assert!(!e.is_retryable());
        assert_eq!(e.to_string(), "FailedPrecondition: no");
        let e = Error::from(tonic::Status::permission_denied("no"));
        assert!(matches!(e, Error::PermissionDenied { .. }), "{e:?}");
        assert_eq!(e.code(), Some(Code::PermissionDenied));
        let e = Error::from(tonic::Status::unauthenticated("no"));
        assert!(matches!(e, Error::Unauthenticated { .. }), "{e:?}");
    }
}
