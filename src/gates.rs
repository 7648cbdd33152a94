//! The five gates, one module each, typed in → typed out. The pipeline runs them in order.

pub mod consent;
pub mod identity;
pub mod intent;
pub mod policy;
pub mod token;
