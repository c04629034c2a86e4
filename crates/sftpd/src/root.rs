//! [`Root`]: maps client paths into the served directory and refuses escapes.
//!
//! Client paths are virtual: `/` is the root, relative paths start at the root too (it is the
//! login directory). A path is first normalised without touching the file system (`.` dropped,
//! `..` pops a component, a `..` with nothing to pop is an escape), then resolved on disk with
//! symlinks followed, and the result must still lie inside the root, so a symlink pointing out
//! is refused as well.

use std::io;
use std::path::{Path, PathBuf};

/// Why a client path was refused before any file system access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Escape;

/// The served directory, canonicalised once at start.
#[derive(Debug)]
pub(crate) struct Root {
    dir: PathBuf,
}

/// A client path normalised inside the root: its components, none of them `.`, `..` or empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VirtualPath(Vec<String>);

impl VirtualPath {
    /// Normalises a client path; `Err(Escape)` when `..` would climb above the root.
    pub(crate) fn parse(path: &str) -> Result<Self, Escape> {
        let mut parts: Vec<String> = Vec::new();
        for part in path.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop().ok_or(Escape)?;
                }
                name => parts.push(name.to_owned()),
            }
        }
        Ok(VirtualPath(parts))
    }

    /// The absolute form a client sees, e.g. `/logs/app.log`, or `/` for the root.
    pub(crate) fn display(&self) -> String {
        if self.0.is_empty() {
            "/".to_owned()
        } else {
            self.0.iter().fold(String::new(), |mut s, part| {
                s.push('/');
                s.push_str(part);
                s
            })
        }
    }
}

impl Root {
    /// Canonicalises `dir` (which must exist) so later prefix checks compare real paths.
    pub(crate) fn new(dir: &Path) -> io::Result<Self> {
        Ok(Root {
            dir: std::fs::canonicalize(dir)?,
        })
    }

    /// The local path of `path` with every symlink followed; permission denied when the result
    /// lies outside the root. Blocking: call from a blocking thread.
    pub(crate) fn resolve(&self, path: &VirtualPath) -> io::Result<PathBuf> {
        let joined = path.0.iter().fold(self.dir.clone(), |p, part| p.join(part));
        let real = std::fs::canonicalize(joined)?;
        self.check_inside(real)
    }

    /// Like [`resolve`](Self::resolve) but the last component is not followed if it is a
    /// symlink (for LSTAT). Blocking.
    pub(crate) fn resolve_parent(&self, path: &VirtualPath) -> io::Result<PathBuf> {
        match path.0.split_last() {
            None => Ok(self.dir.clone()),
            Some((last, parents)) => {
                let parent = self.resolve(&VirtualPath(parents.to_vec()))?;
                Ok(parent.join(last))
            }
        }
    }

    fn check_inside(&self, real: PathBuf) -> io::Result<PathBuf> {
        if real.starts_with(&self.dir) {
            Ok(real)
        } else {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "path leads outside the served directory",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(path: &str) -> Result<String, Escape> {
        VirtualPath::parse(path).map(|p| p.display())
    }

    #[test]
    fn normalises_inside_the_root() {
        assert_eq!(parse(""), Ok("/".to_owned()));
        assert_eq!(parse("."), Ok("/".to_owned()));
        assert_eq!(parse("/"), Ok("/".to_owned()));
        assert_eq!(parse("a/b"), Ok("/a/b".to_owned()));
        assert_eq!(parse("/a//./b/"), Ok("/a/b".to_owned()));
        assert_eq!(parse("/a/../b"), Ok("/b".to_owned()));
        assert_eq!(parse("a/.."), Ok("/".to_owned()));
    }

    #[test]
    fn refuses_climbing_above_the_root() {
        assert_eq!(parse(".."), Err(Escape));
        assert_eq!(parse("/.."), Err(Escape));
        assert_eq!(parse("/../etc/passwd"), Err(Escape));
        assert_eq!(parse("a/../../b"), Err(Escape));
    }

    #[test]
    fn refuses_symlinks_out_of_the_root() -> io::Result<()> {
        let outside = tempfile::tempdir()?;
        std::fs::write(outside.path().join("secret"), b"x")?;
        let served = tempfile::tempdir()?;
        std::fs::write(served.path().join("inside"), b"y")?;
        std::os::unix::fs::symlink(outside.path(), served.path().join("out"))?;
        std::os::unix::fs::symlink("inside", served.path().join("alias"))?;
        let root = Root::new(served.path())?;

        let escape = VirtualPath::parse("/out/secret").map_err(|_| io::ErrorKind::Other)?;
        let err = root.resolve(&escape).err().map(|e| e.kind());
        assert_eq!(err, Some(io::ErrorKind::PermissionDenied));

        let alias = VirtualPath::parse("alias").map_err(|_| io::ErrorKind::Other)?;
        assert_eq!(root.resolve(&alias)?, root.dir.join("inside"));
        assert_eq!(root.resolve_parent(&alias)?, root.dir.join("alias"));
        Ok(())
    }
}
