//! The operating system, behind small safe interfaces: child processes,
//! threads, randomness and network interfaces.

pub mod net;
pub mod random;
pub mod spawn;
pub mod threads;
