//! The operating system, behind small safe interfaces: child processes
//! and their temporary directories, threads, randomness, network
//! interfaces and the heap's size.

pub mod fork;
pub mod heap;
pub mod net;
pub mod random;
pub mod scratch;
pub mod spawn;
pub mod threads;
