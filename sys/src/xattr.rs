//! Extended attributes of a path, never following a symlink (the trees
//! read here are containers' and hostile): llistxattr(2), lgetxattr(2),
//! lsetxattr(2).

use std::ffi::{CStr, CString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn c_path(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Calls `f` with a buffer until it fits: `f(ptr, len)` returns the size
/// the kernel needs (or wrote), ERANGE when the buffer was too small.
fn sized(mut f: impl FnMut(*mut libc::c_void, usize) -> isize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        let n = f(buf.as_mut_ptr().cast(), buf.len());
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(buf);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) || buf.len() >= 1 << 20 {
            return Err(e);
        }
        // Ask for the size it needs now (it may have grown meanwhile).
        let need = f(std::ptr::null_mut(), 0);
        if need < 0 {
            return Err(io::Error::last_os_error());
        }
        buf.resize((need as usize).max(buf.len() * 2), 0);
    }
}

/// The names of `p`'s extended attributes (empty when the filesystem
/// has none or does not support them).
pub fn list(p: &Path) -> io::Result<Vec<CString>> {
    let c = c_path(p)?;
    // SAFETY: a valid NUL-terminated path and a buffer of the length given.
    let raw = match sized(|ptr, len| unsafe { libc::llistxattr(c.as_ptr(), ptr.cast(), len) }) {
        Ok(raw) => raw,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(raw
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .filter_map(|n| CString::new(n).ok())
        .collect())
}

/// The value of `p`'s attribute `name` (None when it has no such one).
pub fn get(p: &Path, name: &CStr) -> io::Result<Option<Vec<u8>>> {
    let c = c_path(p)?;
    // SAFETY: valid NUL-terminated strings and a buffer of the length given.
    match sized(|ptr, len| unsafe { libc::lgetxattr(c.as_ptr(), name.as_ptr(), ptr, len) }) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Sets `p`'s attribute `name` to `value`.
pub fn set(p: &Path, name: &CStr, value: &[u8]) -> io::Result<()> {
    let c = c_path(p)?;
    // SAFETY: valid NUL-terminated strings and a value buffer of the length given.
    let rc = unsafe { libc::lsetxattr(c.as_ptr(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_attributes_round_trip_and_a_symlink_is_not_followed() {
        let d = std::env::temp_dir().join(format!("berth-xattr-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("f");
        std::fs::write(&f, "x").unwrap();
        let name = CString::new("user.berth.test").unwrap();
        if let Err(e) = set(&f, &name, b"value") {
            // tmpfs before 6.6 and some overlays refuse user.*: nothing to test there.
            eprintln!("skipped: the temp dir's filesystem refuses user xattrs: {e}");
            let _ = std::fs::remove_dir_all(&d);
            return;
        }
        let big = vec![b'v'; 1000];
        set(&f, &CString::new("user.berth.big").unwrap(), &big).unwrap();
        let names = list(&f).unwrap();
        assert!(names.contains(&name), "{names:?}");
        assert_eq!(get(&f, &name).unwrap().as_deref(), Some(&b"value"[..]));
        assert_eq!(
            get(&f, &CString::new("user.berth.big").unwrap()).unwrap(),
            Some(big),
            "a value longer than the first buffer"
        );
        assert_eq!(get(&f, &CString::new("user.none").unwrap()).unwrap(), None);
        let link = d.join("l");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert!(!list(&link).unwrap().contains(&name), "the link's own attributes");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
