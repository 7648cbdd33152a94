//! End-to-end tests: the real `agentgate` binary, real HTTPS upstreams minted
//! at test time, real clients (curl, Python requests/httpx, Node fetch, raw
//! sockets). Each test owns its temp dir, upstreams and proxy process.
//!
//! Run everything with `scripts/test` (installs curl, Python requests/httpx and
//! the Node client deps first), or `cargo nextest run --test e2e` once they are.
// Test helpers are shared across this test crate's modules with plain `pub`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    unreachable_pub
)]

mod cases;
mod support;
