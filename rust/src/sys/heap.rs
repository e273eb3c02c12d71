//! The C heap's bytes in use, for the soak test's leak check.

/// Bytes malloc has handed out and not had back, over all arenas (glibc's
/// `mallinfo2`: in-use arena chunks plus mmapped ones), or None where that
/// is not known. Unlike RSS, it does not count memory free()d but kept by
/// malloc for reuse, which climbs for tens of seconds under 10 MB payloads
/// and swings with the machine's load: a leak shows here as growth, a
/// retained arena does not. R's own heap is malloc'd, so it counts too.
pub fn in_use() -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 takes no arguments, only reads malloc's
        // statistics under its own locks, and returns a plain struct.
        let m = unsafe { libc::mallinfo2() };
        Some((m.uordblks + m.hblkhd) as u64)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    #[test]
    fn counts_a_live_allocation_and_not_a_freed_one() {
        let before = super::in_use().unwrap();
        let big = std::hint::black_box(vec![1u8; 64 << 20]);
        let during = super::in_use().unwrap();
        assert!(during >= before + (64 << 20), "{before} -> {during}");
        assert_eq!(big[12345], 1);
        drop(big);
        let after = super::in_use().unwrap();
        assert!(after < during - (60 << 20), "{during} -> {after}");
    }
}
