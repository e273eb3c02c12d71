//! The daemon's side of a connection: dialling the host, proving itself and
//! checking the host's proof, then receiving tasks and sending results.

pub mod client;
pub mod launched;
