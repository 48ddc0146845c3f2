//! The one mapping from application errors to gRPC statuses. Violations travel as
//! `google.rpc.BadRequest` field violations as well as in the message; internal causes are
//! logged and replaced by a generic message.
//!
//! Whatever a request held, the answer stays small: a message is cut to [`MAX_MESSAGE_BYTES`],
//! each violation to [`MAX_VIOLATION_BYTES`], and at most [`MAX_VIOLATIONS`] are listed, so a
//! megabyte of junk in a request field is never echoed back (it would also travel in a header,
//! which clients and proxies limit).

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::app::AppError;

/// Longest status message, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 768;
/// Longest path or message of one BadRequest field violation, in bytes.
pub const MAX_VIOLATION_BYTES: usize = 256;
/// Most field violations listed in the details.
pub const MAX_VIOLATIONS: usize = 20;

/// `text` cut to at most `max` bytes on a character boundary, saying how long it was.
pub fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let suffix = format!("... ({} bytes in all)", text.len());
    let mut end = max.saturating_sub(suffix.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{suffix}", &text[..end])
}

/// What every handler returns.
pub type Reply<T> = Result<tonic::Response<T>, Status>;

/// A use case's outcome as a handler's answer: the value as the response, an error as its status.
pub fn reply<T>(result: Result<T, AppError>) -> Reply<T> {
    result.map(tonic::Response::new).map_err(to_status)
}

pub fn to_status(error: AppError) -> Status {
    match error {
        AppError::Invalid(domain) => {
            let mut details = ErrorDetails::new();
            let violations = domain.violations();
            let listed = violations.len().min(MAX_VIOLATIONS);
            for v in violations.into_iter().take(listed) {
                details.add_bad_request_violation(
                    clip(&v.path, MAX_VIOLATION_BYTES),
                    clip(&v.message, MAX_VIOLATION_BYTES),
                );
            }
            Status::with_error_details(
                Code::InvalidArgument,
                clip(&domain.to_string(), MAX_MESSAGE_BYTES),
                details,
            )
        }
        AppError::NotFound(msg) => Status::not_found(clip(&msg, MAX_MESSAGE_BYTES)),
        AppError::AlreadyExists(msg) => Status::already_exists(clip(&msg, MAX_MESSAGE_BYTES)),
        e @ AppError::Conflict { .. } => Status::aborted(e.to_string()),
        AppError::Aborted(msg) => Status::aborted(clip(&msg, MAX_MESSAGE_BYTES)),
        AppError::OutOfRange(msg) => Status::out_of_range(clip(&msg, MAX_MESSAGE_BYTES)),
        AppError::FailedPrecondition {
            message,
            violations,
        } => {
            let mut details = ErrorDetails::new();
            for (subject, description) in violations.into_iter().take(MAX_VIOLATIONS) {
                details.add_precondition_failure_violation(
                    "SCHEMA",
                    clip(&subject, MAX_VIOLATION_BYTES),
                    clip(&description, MAX_VIOLATION_BYTES),
                );
            }
            Status::with_error_details(
                Code::FailedPrecondition,
                clip(&message, MAX_MESSAGE_BYTES),
                details,
            )
        }
        AppError::TooLarge(msg) | AppError::Lagged(msg) => {
            Status::resource_exhausted(clip(&msg, MAX_MESSAGE_BYTES))
        }
        AppError::PermissionDenied(msg) => Status::permission_denied(clip(&msg, MAX_MESSAGE_BYTES)),
        AppError::Unsupported(msg) => Status::unimplemented(clip(&msg, MAX_MESSAGE_BYTES)),
        AppError::Unavailable(cause) => {
            tracing::warn!(%cause, "backend unavailable");
            Status::unavailable("a backend is unavailable; retry later")
        }
        AppError::DeadlineExceeded(cause) => {
            tracing::warn!(%cause, "backend time bound reached");
            Status::deadline_exceeded(
                "the call ran past REQUEST_TIMEOUT_SECS; nothing was stored, retry later",
            )
        }
        AppError::DataLoss(cause) => {
            tracing::error!(%cause, "stored data is damaged");
            Status::data_loss("stored data is damaged; the server's log says where")
        }
        AppError::Internal(cause) => {
            tracing::error!(%cause, "internal error");
            Status::internal("internal error")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DomainError, Violation};

    #[test]
    fn clipped_text_keeps_its_start_and_says_how_long_it_was() {
        assert_eq!(clip("short", 10), "short");
        let long = "é".repeat(1000);
        let c = clip(&long, 100);
        assert!(c.len() <= 100, "{c}");
        assert!(
            c.starts_with("éé") && c.ends_with("(2000 bytes in all)"),
            "{c}"
        );
    }

    #[test]
    fn a_huge_invalid_request_gives_a_small_status() {
        let junk = "x".repeat(1 << 20);
        let violations = (0..1000)
            .map(|i| Violation {
                path: format!("/{i}/{junk}"),
                message: junk.clone(),
            })
            .collect();
        let status = to_status(AppError::Invalid(DomainError::InvalidSchema(violations)));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().len() <= MAX_MESSAGE_BYTES);
        let details = status.get_error_details();
        let bad = details.bad_request().unwrap();
        assert_eq!(bad.field_violations.len(), MAX_VIOLATIONS);
        assert!(status.details().len() < 16 * 1024);
        let status = to_status(AppError::NotFound(junk));
        assert!(status.message().len() <= MAX_MESSAGE_BYTES);
    }
}
