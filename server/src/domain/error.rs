//! Why the domain rejects an input. Each variant says which gRPC status it becomes (the mapping
//! itself lives in `grpc::status`).

/// One violated rule, located by a JSON pointer into the offending document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON pointer (`/stats/level`) or request field (`name`) the rule is about; empty for the root.
    pub path: String,
    /// Human-readable description of what is wrong.
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = if self.path.is_empty() {
            "/"
        } else {
            &self.path
        };
        write!(f, "{path}: {}", self.message)
    }
}

/// A rejection by the domain: the input breaks a rule, nothing was or will be stored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DomainError {
    /// A request field is malformed (INVALID_ARGUMENT).
    #[error("invalid {field}: {reason}")]
    InvalidField { field: String, reason: String },
    /// The entity type's schema is not a valid JSON Schema (INVALID_ARGUMENT, one violation per problem).
    #[error("schema is not a valid JSON Schema: {}", join(.0))]
    InvalidSchema(Vec<Violation>),
    /// The resulting state breaks the type's schema (INVALID_ARGUMENT, one violation per path).
    #[error("state does not satisfy the schema of entity type {entity_type}: {}", join(.violations))]
    SchemaViolation {
        entity_type: String,
        violations: Vec<Violation>,
    },
    /// The payload cannot be applied in the requested mode (INVALID_ARGUMENT).
    #[error("payload cannot be applied: {0}")]
    InvalidPatch(String),
    /// The result would be over a size limit (RESOURCE_EXHAUSTED); the message names the limit.
    #[error("{0}")]
    TooLarge(String),
    /// The decision was made with schema version `decided` but the type is now at `current`:
    /// a schema change committed meanwhile. The application decides again with the current
    /// schema; if that keeps failing it is ABORTED (safe to retry).
    #[error(
        "the schema of entity type {entity_type} changed (version {decided} -> {current}) while the write was decided; retry"
    )]
    StaleSchema {
        entity_type: String,
        decided: i64,
        current: i64,
    },
    /// The payload breaks its declared event type's payload schema (INVALID_ARGUMENT, one
    /// violation per path, each under `payload`).
    #[error("payload does not satisfy the payload schema of event type {event_type}: {}", join(.violations))]
    PayloadViolation {
        event_type: String,
        violations: Vec<Violation>,
    },
    /// Guards of a declared event type are false on the current state (FAILED_PRECONDITION,
    /// naming each failing guard).
    #[error("event type {event_type} refused by its guards: {}", .failed.join("; "))]
    GuardFailed {
        event_type: String,
        failed: Vec<String>,
    },
    /// A dry run's decision, refused on purpose so that nothing is stored; never reaches a
    /// caller (the application answers the decision instead).
    #[error("dry run: nothing is stored")]
    DryRun,
    /// The instance's lifecycle state forbids the command (an archived instance written to,
    /// an instance archived twice): FAILED_PRECONDITION, the message names the state.
    #[error("{0}")]
    NotNow(String),
}

fn join(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl DomainError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The individual violations, for rich error details.
    pub fn violations(&self) -> Vec<Violation> {
        match self {
            Self::InvalidField { field, reason } => vec![Violation {
                path: field.clone(),
                message: reason.clone(),
            }],
            Self::InvalidSchema(v) => v.clone(),
            Self::SchemaViolation { violations, .. }
            | Self::PayloadViolation { violations, .. } => violations.clone(),
            Self::GuardFailed { failed, .. } => failed
                .iter()
                .map(|f| Violation {
                    path: "guards".into(),
                    message: f.clone(),
                })
                .collect(),
            Self::StaleSchema { .. } | Self::NotNow(_) | Self::DryRun => Vec::new(),
            Self::InvalidPatch(reason) | Self::TooLarge(reason) => vec![Violation {
                path: "payload".into(),
                message: reason.clone(),
            }],
        }
    }
}
