//! The free-disk reserve of spill files: a data set received into a temporary file must leave
//! a configured number of bytes free on that file system, so that a peer cannot fill the disk
//! the archive stores to. Checked when a spill file is made and then every [`CHECK_EVERY`]
//! bytes written to it.

use std::io;
use std::path::Path;

/// How often (in bytes written to one spill file) the free space is checked again.
pub(crate) const CHECK_EVERY: u64 = 8 << 20;

/// Whether appending `add` bytes to a spill file of `len` bytes crosses a check point.
pub(crate) fn crosses_check_point(len: u64, add: usize) -> bool {
    len / CHECK_EVERY != len.saturating_add(add as u64) / CHECK_EVERY
}

/// Ok when the file system of `dir` has at least `min_free` bytes available to this process
/// (`f_bavail`); `min_free` 0 turns the check off.
pub(crate) fn check(dir: &Path, min_free: u64) -> io::Result<()> {
    if min_free == 0 {
        return Ok(());
    }
    let stat = rustix::fs::statvfs(dir).map_err(io::Error::from)?;
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    if free < min_free {
        return Err(io::Error::new(
            io::ErrorKind::StorageFull,
            format!(
                "{free} bytes free in {}, {min_free} kept in reserve",
                dir.display()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_points_and_reserve() {
        assert!(!crosses_check_point(0, 100));
        assert!(crosses_check_point(CHECK_EVERY - 1, 1));
        assert!(!crosses_check_point(CHECK_EVERY, 1));
        let dir = tempfile::tempdir().unwrap();
        check(dir.path(), 0).unwrap();
        check(dir.path(), 1).unwrap();
        let err = check(dir.path(), u64::MAX).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
    }
}
