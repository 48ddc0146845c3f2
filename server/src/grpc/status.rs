//! The one mapping from application errors to gRPC statuses. Violations travel as
//! `google.rpc.BadRequest` field violations as well as in the message; internal causes are
//! logged and replaced by a generic message.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::app::AppError;

pub fn to_status(error: AppError) -> Status {
    match error {
        AppError::Invalid(domain) => {
            let mut details = ErrorDetails::new();
            for v in domain.violations() {
                details.add_bad_request_violation(v.path, v.message);
            }
            Status::with_error_details(Code::InvalidArgument, domain.to_string(), details)
        }
        AppError::NotFound(msg) => Status::not_found(msg),
        AppError::AlreadyExists(msg) => Status::already_exists(msg),
        e @ AppError::Conflict { .. } => Status::aborted(e.to_string()),
        AppError::TooLarge(msg) => Status::resource_exhausted(msg),
        AppError::Unsupported(msg) => Status::unimplemented(msg),
        AppError::Unavailable(cause) => {
            tracing::warn!(%cause, "backend unavailable");
            Status::unavailable("a backend is unavailable; retry later")
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
