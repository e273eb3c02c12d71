//! Randomness for secrets, nonces, socket names and WebSocket keys.

/// `n` bytes from the system's random source (ring's `SystemRandom`, the
/// generator rustls uses: `getrandom(2)` here), for secrets, nonces, socket
/// names and WebSocket keys.
pub fn random_bytes(n: usize) -> std::io::Result<Vec<u8>> {
    let mut bytes = vec![0u8; n];
    fill_random(&mut bytes)?;
    Ok(bytes)
}

pub fn fill_random(buf: &mut [u8]) -> std::io::Result<()> {
    use ring::rand::SecureRandom;
    ring::rand::SystemRandom::new().fill(buf).map_err(|_| std::io::Error::other("the system's random source failed"))
}
