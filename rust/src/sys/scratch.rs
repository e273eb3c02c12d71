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

/// Where to make daemons' directories, read from the launcher's
/// environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    /// The directory R would make a session's temporary directory in: the
    /// first of `TMPDIR`, `TMP` and `TEMP` that names a writable directory,
    /// else `/tmp` (R's own rule), made absolute (the launcher may change
    /// its working directory before it removes what it made there).
    pub dir: PathBuf,
    /// The launcher's `TMPDIR`, if set: a daemon gives it back to what its
    /// tasks start (see `daemon::launched`).
    pub tmpdir: Option<OsString>,
}

/// Room left in a path for R's own `RtmpXXXXXX` and a task's file names:
/// a base longer than `PATH_MAX` less this gets no directory of its own
/// (R could not make its own inside, and the daemon would not start).
const PATH_ROOM: usize = 1024;

/// The base for the environment `var` reads; None if no directory of its
/// own can be made there.
pub fn base(var: impl Fn(&str) -> Option<OsString>) -> Option<Base> {
    let dir = ["TMPDIR", "TMP", "TEMP"]
        .iter()
        .filter_map(|v| var(v))
        .map(PathBuf::from)
        .find(|p| writable_dir(p))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    let dir = std::fs::canonicalize(dir).ok()?;
    (dir.as_os_str().len() + PATH_ROOM < libc::PATH_MAX as usize).then(|| Base { dir, tmpdir: var("TMPDIR") })
}

fn writable_dir(p: &Path) -> bool {
    let Ok(c) = CString::new(p.as_os_str().as_bytes()) else { return false };
    // SAFETY: access reads the NUL-terminated path it is given.
    p.is_dir() && unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0
}

/// How the name of each such directory begins (mkdtemp adds six
/// characters); a daemon takes only a directory so named for its own.
pub const PREFIX: &str = "mirai-daemon-";

/// A directory made for one child process, removed by `remove`.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
    /// `Base::tmpdir`.
    outer: Option<OsString>,
}

impl Scratch {
    /// A new directory `mirai-daemon-XXXXXX` in `base`, open to its owner
    /// only.
    pub fn create(base: &Base) -> io::Result<Scratch> {
        let mut template = base.dir.join(format!("{PREFIX}XXXXXX")).into_os_string().into_vec();
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
        Ok(Scratch { path: PathBuf::from(OsString::from_vec(template)), outer: base.tmpdir.clone() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The launcher's `TMPDIR`, if it had one.
    pub fn outer_tmpdir(&self) -> Option<&OsString> {
        self.outer.as_ref()
    }

    /// Removes the directory and everything in it. Links inside are
    /// removed, not followed. What cannot be removed (a file a process
    /// still writes) stays; nothing waits for it.
    pub fn remove(self) {
        let _ = std::fs::remove_dir_all(&self.path);
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
        let dir = |b: Option<Base>| b.unwrap().dir;
        assert_eq!(base(env(vec![("TMPDIR", here.clone())])), Some(Base { dir: here.clone(), tmpdir: Some(here.clone().into()) }));
        // Not a directory, or empty: the next variable, then /tmp.
        let missing = here.join("missing");
        let b = base(env(vec![("TMPDIR", missing.clone()), ("TEMP", here.clone())])).unwrap();
        assert_eq!(b, Base { dir: here.clone(), tmpdir: Some(missing.clone().into()) });
        assert_eq!(dir(base(env(vec![("TMPDIR", PathBuf::new()), ("TMP", missing)]))), PathBuf::from("/tmp"));
        assert_eq!(base(env(vec![])), Some(Base { dir: PathBuf::from("/tmp"), tmpdir: None }));
        // Relative: made absolute.
        let cwd = std::env::current_dir().unwrap();
        let rel = pathdiff(&here, &cwd);
        assert_eq!(dir(base(env(vec![("TMPDIR", rel)]))), here);
        // So long that R could not make its own directory inside: none.
        let mut deep = here.clone();
        while deep.as_os_str().len() + PATH_ROOM < libc::PATH_MAX as usize {
            deep.push("d".repeat(200));
        }
        std::fs::create_dir_all(&deep).unwrap();
        assert_eq!(base(env(vec![("TMPDIR", deep)])), None);
        std::fs::remove_dir_all(&here).unwrap();
    }

    /// `to` relative to `from` (both absolute), through "..".
    fn pathdiff(to: &Path, from: &Path) -> PathBuf {
        let mut up = PathBuf::new();
        for _ in from.components().skip(1) {
            up.push("..");
        }
        up.join(to.strip_prefix("/").unwrap())
    }

    #[test]
    fn a_scratch_directory_is_private_and_removed_with_what_it_holds() {
        use std::os::unix::fs::PermissionsExt;
        let base = Base { dir: std::env::temp_dir(), tmpdir: None };
        let s = Scratch::create(&base).unwrap();
        let t = Scratch::create(&base).unwrap();
        assert_ne!(s.path(), t.path());
        let dir = s.path().to_path_buf();
        assert!(dir.file_name().unwrap().to_str().unwrap().starts_with(PREFIX));
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
        assert!(Scratch::create(&Base { dir: PathBuf::from("/nonexistent/mirai"), tmpdir: None }).is_err());
    }
}
