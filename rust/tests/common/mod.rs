//! What several integration tests share (each test crate uses some of it).
#![allow(dead_code)]

use mirai::host::HostOptions;
use std::time::{Duration, Instant};

/// A test host's options: a dispatcher or not, secret "s3cret", no memory
/// cap, and a message limit no test reaches.
pub fn host_options(dispatcher: bool) -> HostOptions {
    HostOptions {
        dispatcher,
        secret: Some("s3cret".into()),
        oneshot: false,
        rng_stream: None,
        settings: Vec::new(),
        memory_cap: 0,
        max_message: 1 << 40,
    }
}

/// Whether `cond` holds within `secs` seconds (checked every 10 ms).
pub fn wait_for(mut cond: impl FnMut() -> bool, secs: u64) -> bool {
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}
