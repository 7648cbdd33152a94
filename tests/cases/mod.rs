//! The test cases, grouped by what they exercise.

mod audit;
mod audit_faults;
mod bad_input;
mod basic;
mod ciba;
mod cli;
mod consent;
mod guard;
mod identity;
mod intent_policy;
mod lifecycle;
mod oidc_provider;
mod panic;
mod streaming;
mod token;
mod tunnel;
mod workload;
