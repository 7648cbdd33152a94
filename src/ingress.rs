//! The agent side: accept connections, answer `CONNECT`, terminate TLS, and hand each HTTP
//! request to the pipeline. Nothing here decides anything about a request's content.

pub mod connect;
pub mod framing;
pub mod listener;
pub mod mitm;
pub mod transparent;
