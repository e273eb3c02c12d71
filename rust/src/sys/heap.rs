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

