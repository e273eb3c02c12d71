//! A local daemon's own directory for temporary files.
//!
//! R removes its session's temporary directory (`tempdir()`) only when it
//! exits normally. A daemon that is killed (SIGKILL from a user or the OOM
//! killer, or the SIGTERM its watcher sends when the host goes away during
//! a task) left its `RtmpXXXXXX` behind, with whatever its tasks wrote
//! there. The launcher therefore makes a directory for each daemon it
//! launches, hands it over as `TMPDIR` (R makes its own directory inside),
//! and removes it once it has reaped the daemon.
//!
//! Whoever made the directory removes it. A daemon removing its own
//! `tempdir()` instead could not tell whether it made it: a daemon started
//! in a forked child (`parallel::mcparallel(mirai::daemon(url))`) shares
//! its parent session's, which would be deleted under the parent.

use std::ffi::{CString, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// The directory R would make a session's temporary directory in, given
/// the environment `var` reads: the first of `TMPDIR`, `TMP` and `TEMP`
/// that names a writable directory, else `/tmp` (R's own rule).
pub fn base(var: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    ["TMPDIR", "TMP", "TEMP"]
        .iter()
        .filter_map(|v| var(v))
        .map(PathBuf::from)
        .find(|p| writable_dir(p))
        .unwrap_or_else(|| PathBuf::from("/tmp"))
}

fn writable_dir(p: &Path) -> bool {
    let Ok(c) = CString::new(p.as_os_str().as_bytes()) else { return false };
    // SAFETY: access reads the NUL-terminated path it is given.
    p.is_dir() && unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0
}

/// A directory made for one child process, removed by `remove`.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    /// A new directory `mirai-daemon-XXXXXX` in `base`, open to its owner
    /// only.
    pub fn create(base: &Path) -> io::Result<Scratch> {
        let mut template = base.join("mirai-daemon-XXXXXX").into_os_string().into_vec();
        if template.contains(&0) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the directory's path"));
        }
        template.push(0);
        // SAFETY: mkdtemp rewrites the trailing X's of the NUL-terminated
        // buffer it is given, in place, and returns it or NULL.
        let made = unsafe { libc::mkdtemp(template.as_mut_ptr().cast::<libc::c_char>()) };
        if made.is_null() {
            return Err(io::Error::last_os_error());
        }
        template.pop();
        Ok(Scratch(PathBuf::from(OsString::from_vec(template))))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Removes the directory and everything in it. Links inside are
    /// removed, not followed. What cannot be removed (a file a process
    /// still writes) stays; nothing waits for it.
    pub fn remove(self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_follows_r_rule_for_its_temporary_directory() {
        let here = std::env::temp_dir().join(format!("mirai-scratch-base-{}", std::process::id()));
        std::fs::create_dir_all(&here).unwrap();
        let env = |pairs: Vec<(&'static str, PathBuf)>| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone().into_os_string())
        };
        assert_eq!(base(env(vec![("TMPDIR", here.clone())])), here);
        // Not a directory, or empty: the next variable, then /tmp.
        let missing = here.join("missing");
        assert_eq!(base(env(vec![("TMPDIR", missing.clone()), ("TEMP", here.clone())])), here);
        assert_eq!(base(env(vec![("TMPDIR", PathBuf::new()), ("TMP", missing)])), PathBuf::from("/tmp"));
        std::fs::remove_dir_all(&here).unwrap();
    }

    #[test]
    fn a_scratch_directory_is_private_and_removed_with_what_it_holds() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir();
        let s = Scratch::create(&base).unwrap();
        let t = Scratch::create(&base).unwrap();
        assert_ne!(s.path(), t.path());
        let dir = s.path().to_path_buf();
        assert!(dir.file_name().unwrap().to_str().unwrap().starts_with("mirai-daemon-"));
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        // What R makes inside, and a link out of it: the link goes, its
        // target stays.
        let outside = t.path().join("kept");
        std::fs::write(&outside, b"x").unwrap();
        std::fs::create_dir_all(dir.join("RtmpAbc123/sub")).unwrap();
        std::fs::write(dir.join("RtmpAbc123/sub/file"), b"data").unwrap();
        std::os::unix::fs::symlink(t.path(), dir.join("RtmpAbc123/link")).unwrap();
        s.remove();
        assert!(!dir.exists());
        assert!(outside.exists());
        t.remove();
        assert!(Scratch::create(Path::new("/nonexistent/mirai")).is_err());
    }
}
