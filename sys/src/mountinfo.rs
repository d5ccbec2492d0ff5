//! `/proc/<pid>/mountinfo` (proc(5)): field 5 is the mount point (octal
//! escaped), field 7 on are optional fields such as `shared:N` and
//! `master:N`, up to a lone `-`.

use std::path::{Path, PathBuf};

/// One mount, the parts Berth reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Where it is mounted (octal escapes decoded).
    pub mount_point: PathBuf,
    /// Has a `shared:N` optional field: events propagate to and from peers.
    pub shared: bool,
    /// Has a `master:N` optional field: events arrive from the master.
    pub slave: bool,
}

/// Every well-formed line of mountinfo text, in order (a line too short to
/// have a mount point and options is passed over).
pub fn parse(text: &str) -> Vec<Entry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let mount_point = fields.get(4)?;
            let optional = fields.get(6..)?.iter().take_while(|f| **f != "-");
            let (mut shared, mut slave) = (false, false);
            for f in optional {
                shared |= f.starts_with("shared:");
                slave |= f.starts_with("master:");
            }
            Some(Entry {
                mount_point: PathBuf::from(unescape_octal(mount_point)),
                shared,
                slave,
            })
        })
        .collect()
}

/// The mount holding `path` (a resolved absolute path): the last-listed
/// entry with the longest mount point that is a prefix of it, which is the
/// topmost one when mounts are stacked.
pub fn containing<'a>(entries: &'a [Entry], path: &Path) -> Option<&'a Entry> {
    let mut best: Option<&Entry> = None;
    for e in entries {
        if path.starts_with(&e.mount_point)
            && best.is_none_or(|b| e.mount_point.components().count() >= b.mount_point.components().count())
        {
            best = Some(e);
        }
    }
    best
}

/// [`containing`] over mountinfo text: the mount point holding `path`,
/// and whether it is shared.
pub fn holding(text: &str, path: &Path) -> Option<(PathBuf, bool)> {
    containing(&parse(text), path).map(|e| (e.mount_point.clone(), e.shared))
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
pub fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let digits = std::str::from_utf8(&b[i + 1..i + 4]).ok();
            if let Some(v) = digits.and_then(|d| u8::from_str_radix(d, 8).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
22 1 0:20 / / rw shared:1 - tmpfs newroot rw
30 22 0:25 / /run rw shared:9 master:2 - tmpfs run rw
31 30 0:26 / /run/a\\040b rw - tmpfs x rw
32 30 0:27 / /run rw - tmpfs over rw
short line
";

    #[test]
    fn entries_decode_mount_points_and_propagation() {
        let e = parse(INFO);
        assert_eq!(e.len(), 4, "the short line is passed over");
        assert_eq!(
            (e[0].mount_point.as_path(), e[0].shared, e[0].slave),
            (Path::new("/"), true, false)
        );
        assert_eq!((e[1].shared, e[1].slave), (true, true));
        assert_eq!(e[2].mount_point, Path::new("/run/a b"));
        assert_eq!(unescape_octal("a\\011b\\134c\\012"), "a\tb\\c\n");
        assert_eq!(unescape_octal("odd\\9xy\\04"), "odd\\9xy\\04", "not octal: kept");
    }

    #[test]
    fn the_longest_and_topmost_mount_holds_a_path() {
        // /run is listed twice: the later (over-mounted, private) one counts.
        assert_eq!(
            holding(INFO, Path::new("/run/berth/c")),
            Some((PathBuf::from("/run"), false))
        );
        assert_eq!(
            holding(INFO, Path::new("/run/a b/x")),
            Some((PathBuf::from("/run/a b"), false))
        );
        assert_eq!(holding(INFO, Path::new("/var")), Some((PathBuf::from("/"), true)));
        assert_eq!(holding("", Path::new("/var")), None);
    }
}
