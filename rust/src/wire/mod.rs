//! What crosses a connection, from bytes up to authenticated messages.
//!
//! - `url`: the addresses daemons listen on and dial (the one URL parser).
//! - `frame`, `decoder`: NNG's SP framing (pair1) and our message envelope,
//!   and the incremental decoder that reads them within limits.
//! - `proto`: the handshake and control messages.
//! - `auth`: the challenge-response proof of the profile's secret.
//! - `tls`, `ws`: TLS (rustls) and WebSocket (RFC 6455) layers.
//! - `transport`: the connection stacks (Unix socket, TCP, TLS, WebSocket)
//!   the host and the daemon read and write through.

pub mod auth;
pub mod decoder;
pub mod frame;
pub mod proto;
pub mod tls;
pub mod transport;
pub mod url;
pub mod ws;
