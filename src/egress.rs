//! The internet side: the egress guard (where may we dial) and the upstream client.

pub mod guard;
pub mod upstream;
