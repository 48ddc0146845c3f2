//! Implementations of the ports, one folder per technology. Each has its own error type,
//! mapped into [`crate::ports::StoreError`] at its boundary.

pub mod postgres;
