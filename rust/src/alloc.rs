//! The global allocator of the package's shared object (feature
//! `mmap-alloc`, which src/Makevars turns on): on Linux, blocks of `LARGE`
//! bytes or more come straight from `mmap` and go straight back to the
//! system when freed, and grow or shrink with `mremap` (pages move, bytes
//! are not copied); smaller blocks, and everything elsewhere, come from the
//! system allocator. Only Rust's allocations are concerned (task frames,
//! replies, decoder buffers); R's own are not.
//!
//! Why: glibc serves large blocks with mmap only below its mmap threshold,
//! and raises that threshold to the size of any mmapped block it frees (up
//! to 32 MiB). After the first 16 MiB frame buffer was freed, every later
//! frame of 10 MB came from glibc's heap, and freed heap memory stays in
//! the process. Measured (10 MB tasks piling up for a slow daemon, one
//! other daemon stopped): host RSS stayed at 338 MB after every task had
//! resolved, 449 MB of it free in glibc's arena (`malloc_trim` brought it
//! to 67 MB); with this allocator it returned to within a few MB of its
//! start. Serializing into a growing frame also stops copying it at each
//! doubling.
//!
//! Not a global allocator in `cargo test` builds, where some tests install
//! their own to count allocations; its own tests call it directly.

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks this size or larger are mapped directly.
pub const LARGE: usize = 1 << 20;

pub struct LargeMmap;

#[cfg(target_os = "linux")]
mod imp {
    use super::*;

    fn page() -> usize {
        // SAFETY: sysconf has no preconditions.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if p > 0 {
            p as usize
        } else {
            4096
        }
    }

    /// Mapped directly: large, and an alignment a page satisfies.
    pub fn mapped(l: Layout) -> bool {
        l.size() >= LARGE && l.align() <= page()
    }

    pub unsafe fn map(size: usize) -> *mut u8 {
        let p = libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            std::ptr::null_mut()
        } else {
            p as *mut u8
        }
    }

    pub unsafe fn unmap(p: *mut u8, size: usize) {
        libc::munmap(p as *mut libc::c_void, size);
    }

    pub unsafe fn remap(p: *mut u8, old: usize, new: usize) -> *mut u8 {
        let q = libc::mremap(p as *mut libc::c_void, old, new, libc::MREMAP_MAYMOVE);
        if q == libc::MAP_FAILED {
            std::ptr::null_mut()
        } else {
            q as *mut u8
        }
    }
}

#[cfg(target_os = "linux")]
unsafe impl GlobalAlloc for LargeMmap {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if imp::mapped(l) {
            imp::map(l.size())
        } else {
            System.alloc(l)
        }
    }

    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if imp::mapped(l) {
            // Fresh anonymous pages are zero.
            imp::map(l.size())
        } else {
            System.alloc_zeroed(l)
        }
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if imp::mapped(l) {
            imp::unmap(p, l.size())
        } else {
            System.dealloc(p, l)
        }
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let to = Layout::from_size_align_unchecked(new, l.align());
        match (imp::mapped(l), imp::mapped(to)) {
            (false, false) => System.realloc(p, l, new),
            (true, true) => imp::remap(p, l.size(), new),
            (false, true) => {
                let q = imp::map(new);
                if !q.is_null() {
                    std::ptr::copy_nonoverlapping(p, q, l.size());
                    System.dealloc(p, l);
                }
                q
            }
            (true, false) => {
                let q = System.alloc(to);
                if !q.is_null() {
                    std::ptr::copy_nonoverlapping(p, q, new);
                    imp::unmap(p, l.size());
                }
                q
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
unsafe impl GlobalAlloc for LargeMmap {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        System.alloc_zeroed(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        System.realloc(p, l, new)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// This process's resident set, in bytes.
    fn rss() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * imp_page()
    }

    fn imp_page() -> usize {
        // SAFETY: sysconf has no preconditions.
        unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
    }

    #[test]
    fn blocks_keep_their_bytes_across_every_kind_of_resize() {
        let a = LargeMmap;
        unsafe {
            let l = Layout::from_size_align(1000, 8).unwrap();
            let mut p = a.alloc(l);
            let mut size = 1000;
            for i in 0..size {
                *p.add(i) = (i % 251) as u8;
            }
            // small -> large -> larger -> small, then free.
            for new in [LARGE + 5, 8 * LARGE + 3, 700] {
                p = a.realloc(p, Layout::from_size_align(size, 8).unwrap(), new);
                assert!(!p.is_null());
                for i in 0..size.min(new).min(1000) {
                    assert_eq!(*p.add(i), (i % 251) as u8, "byte {i} after resizing to {new}");
                }
                size = new;
            }
            a.dealloc(p, Layout::from_size_align(size, 8).unwrap());
            let z = Layout::from_size_align(3 * LARGE, 16).unwrap();
            let q = a.alloc_zeroed(z);
            assert!((0..z.size()).step_by(4093).all(|i| *q.add(i) == 0));
            a.dealloc(q, z);
        }
    }

    #[test]
    fn a_freed_large_block_leaves_the_process() {
        let a = LargeMmap;
        let size = 64 << 20;
        unsafe {
            let l = Layout::from_size_align(size, 1).unwrap();
            let p = a.alloc(l);
            std::ptr::write_bytes(p, 1, size);
            let held = rss();
            a.dealloc(p, l);
            let after = rss();
            assert!(held - after > size / 2, "RSS {held} with the block, {after} after freeing it");
        }
    }
}
