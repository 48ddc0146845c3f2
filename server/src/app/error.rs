//! Errors of the use cases. Each variant names the gRPC code it becomes; the mapping itself is
//! in `grpc::status`, the one place that turns errors into statuses.

use crate::domain::{Access, DomainError, Principal};
use crate::ports::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Bad input or a broken rule: INVALID_ARGUMENT, with one field violation per problem.
    #[error(transparent)]
    Invalid(DomainError),
    /// NOT_FOUND, with a whole sentence saying what is missing.
    #[error("{0}")]
    NotFound(String),
    /// ALREADY_EXISTS.
    #[error("{0}")]
    AlreadyExists(String),
    /// ABORTED: the caller's expected version is not the current one.
    #[error("expected version {expected} but instance is at version {current}")]
    Conflict { expected: i64, current: i64 },
    /// ABORTED: a concurrent change won (a stale expected schema version); retrying after
    /// re-reading is safe.
    #[error("{0}")]
    Aborted(String),
    /// FAILED_PRECONDITION: refused in the current state of what the call addresses (a schema
    /// that current states break, a type that still has instances). `violations` (subject,
    /// description) travel as `google.rpc.PreconditionFailure` details.
    #[error("{message}")]
    FailedPrecondition {
        message: String,
        violations: Vec<(String, String)>,
    },
    /// OUT_OF_RANGE: the history asked for lies before the retention horizon (the message names
    /// it); what is kept can still be asked for.
    #[error("{0}")]
    OutOfRange(String),
    /// RESOURCE_EXHAUSTED: over a size or count limit.
    #[error("{0}")]
    TooLarge(String),
    /// RESOURCE_EXHAUSTED: a subscriber fell too far behind and was cut off; it may resubscribe
    /// from the version it reached.
    #[error("{0}")]
    Lagged(String),
    /// PERMISSION_DENIED: the caller is authenticated but no scope of theirs allows the call;
    /// nothing was done.
    #[error("{0}")]
    PermissionDenied(String),
    /// UNIMPLEMENTED: this deployment's backend does not offer the capability.
    #[error("{0}")]
    Unsupported(String),
    /// UNAVAILABLE: a backend is down; retrying is safe.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// DEADLINE_EXCEEDED: the backend gave up at its time bound; nothing was stored.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// DATA_LOSS: stored data is damaged. The message (naming what and where) is logged, never
    /// sent.
    #[error("stored data is damaged: {0}")]
    DataLoss(String),
    /// INTERNAL: a bug. The message is logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid(DomainError::invalid(field, reason))
    }
}

/// PERMISSION_DENIED unless a scope of `principal` allows `access` to the type named
/// `entity_type`.
pub(crate) fn require(
    principal: &Principal,
    access: Access,
    entity_type: &str,
) -> Result<(), AppError> {
    if principal.allows(access, entity_type) {
        return Ok(());
    }
    Err(AppError::PermissionDenied(format!(
        "{} may not {access} entity type {entity_type}: that needs the scope {access} or \
         {access}:{entity_type}",
        who(principal)
    )))
}

/// PERMISSION_DENIED unless `principal` may `access` at least one entity type: checked before
/// anything is looked up, so a caller without the level learns nothing about what exists.
pub(crate) fn require_some(principal: &Principal, access: Access) -> Result<(), AppError> {
    if principal.allows_some(access) {
        return Ok(());
    }
    Err(AppError::PermissionDenied(format!(
        "{} has no {access} scope",
        who(principal)
    )))
}

fn who(principal: &Principal) -> String {
    if principal.name.is_empty() {
        "the caller".to_string()
    } else {
        format!("{:?}", principal.name)
    }
}

impl From<DomainError> for AppError {
    /// A result over a size limit is RESOURCE_EXHAUSTED; every other rejection is the caller's
    /// bad input.
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::TooLarge(m) => Self::TooLarge(m),
            e @ DomainError::StaleSchema { .. } => Self::Aborted(e.to_string()),
            DomainError::NotNow(message) => Self::FailedPrecondition {
                message,
                violations: Vec::new(),
            },
            e @ DomainError::GuardFailed { .. } => Self::FailedPrecondition {
                message: e.to_string(),
                violations: e
                    .violations()
                    .into_iter()
                    .map(|v| (v.path, v.message))
                    .collect(),
            },
            other => Self::Invalid(other),
        }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => Self::NotFound(format!("{what} not found")),
            StoreError::AlreadyExists(what) => {
                Self::AlreadyExists(format!("{what} already exists"))
            }
            StoreError::Conflict { expected, current } => Self::Conflict { expected, current },
            e @ StoreError::SchemaConflict { .. } => Self::Aborted(e.to_string()),
            StoreError::Precondition(message) => Self::FailedPrecondition {
                message,
                violations: Vec::new(),
            },
            StoreError::Rejected(d) => Self::from(d),
            StoreError::Unavailable(m) => Self::Unavailable(m),
            StoreError::TimedOut(m) => Self::DeadlineExceeded(m),
            StoreError::Corrupt(m) => Self::DataLoss(m),
            StoreError::Internal(m) => Self::Internal(m),
        }
    }
}
