//! What several integration tests share.

use mirai::host::HostOptions;

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
