//! The test cases, grouped by what they exercise.

mod admin_api;
mod audit;
mod audit_faults;
mod bad_input;
mod basic;
mod ciba;
mod cli;
mod consent;
mod dashboard;
mod git;
mod guard;
mod hardening_bodies;
mod hardening_requests;
mod identity;
mod intent_policy;
mod lifecycle;
mod load;
mod metrics;
mod oidc_provider;
mod panic;
mod streaming;
mod tenants;
mod tenants_api;
mod token;
mod tunnel;
mod workload;
