//! `sys::heap::in_use` counts the whole process's heap: in its own test
//! binary, with nothing else allocating or freeing meanwhile (among the
//! library's unit tests, run on parallel threads, another test's frees
//! took 1.5 MB off a 64 MB allocation, 4 runs in 15 with 4 threads).

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn counts_a_live_allocation_and_not_a_freed_one() {
    use mirai::sys::heap::in_use;
    let before = in_use().unwrap();
    let big = std::hint::black_box(vec![1u8; 64 << 20]);
    let during = in_use().unwrap();
    assert!(during >= before + (64 << 20), "{before} -> {during}");
    assert_eq!(big[12345], 1);
    drop(big);
    let after = in_use().unwrap();
    assert!(after < during - (60 << 20), "{during} -> {after}");
}
