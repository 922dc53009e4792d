//! Holdfast core: configuration (parsing and validation), the model types shared by every
//! crate (call records, reset classes), and errors. This crate does no I/O.

pub mod call;
pub mod config;

pub use call::{AiUsage, CallExtra, CallRecord, ResetClass};
