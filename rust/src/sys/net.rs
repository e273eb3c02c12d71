//! This machine's network interfaces.

/// IPv4 addresses of this machine's interfaces, loopback excluded, with
/// their interface names.
pub fn interface_addresses() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut ifa: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list it allocated into `ifa`.
    if unsafe { libc::getifaddrs(&mut ifa) } != 0 {
        return out;
    }
    let mut p = ifa;
    while !p.is_null() {
        // SAFETY: `p` is an entry of the list getifaddrs made, not yet
        // freed; an AF_INET address is a sockaddr_in, and ifa_name a C
        // string, both in that list.
        unsafe {
            let a = (*p).ifa_addr;
            if !a.is_null() && (*a).sa_family as i32 == libc::AF_INET {
                let sin = &*(a as *const libc::sockaddr_in);
                let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                if !ip.is_loopback() {
                    let name = std::ffi::CStr::from_ptr((*p).ifa_name).to_string_lossy().into_owned();
                    out.push((name, ip.to_string()));
                }
            }
            p = (*p).ifa_next;
        }
    }
    // SAFETY: the list getifaddrs made, freed once, no entry used after.
    unsafe { libc::freeifaddrs(ifa) };
    out
}
