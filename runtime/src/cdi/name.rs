//! CDI names: a spec's `kind` (`vendor.com/class`) and a fully qualified
//! device name (`vendor.com/class=name`), checked against the CDI grammar.
//!
//! A name from a CRI request is only ever a key into the parsed specs, never
//! part of a path; checking it anyway turns a hostile or mistyped name into
//! a clear InvalidArgument instead of a confusing "unknown device".

use std::fmt;

/// Longest vendor (a DNS subdomain).
const VENDOR_MAX: usize = 253;
/// Longest class (the name segment of `kind`).
const CLASS_MAX: usize = 63;
/// Longest device name (the spec sets none; bounded so errors stay short).
const DEVICE_MAX: usize = 255;

/// A spec's `kind`: vendor and class.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Kind {
    /// `vendor.com`.
    pub vendor: String,
    /// `gpu`.
    pub class: String,
}

impl Kind {
    /// Parses `vendor.com/class`.
    pub fn parse(kind: &str) -> Result<Kind, String> {
        let (vendor, class) = kind
            .split_once('/')
            .ok_or_else(|| format!("kind {kind:?} is not vendor/class"))?;
        check_segment(vendor, "vendor", VENDOR_MAX)?;
        check_segment(class, "class", CLASS_MAX)?;
        Ok(Kind {
            vendor: vendor.to_string(),
            class: class.to_string(),
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.vendor, self.class)
    }
}

/// A fully qualified CDI device name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QualifiedName {
    /// Vendor and class.
    pub kind: Kind,
    /// The device's name within its kind.
    pub name: String,
}

impl QualifiedName {
    /// Parses `vendor.com/class=name`.
    pub fn parse(full: &str) -> Result<QualifiedName, String> {
        let (kind, name) = full
            .split_once('=')
            .ok_or_else(|| "not vendor.com/class=name".to_string())?;
        let kind = Kind::parse(kind)?;
        check_device_name(name)?;
        Ok(QualifiedName {
            kind,
            name: name.to_string(),
        })
    }
}

impl fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.kind, self.name)
    }
}

/// Vendor and class: a letter first, a letter or digit last, and letters,
/// digits, `-`, `_`, `.` between.
fn check_segment(s: &str, what: &str, max: usize) -> Result<(), String> {
    let b = s.as_bytes();
    let (Some(first), Some(last)) = (b.first(), b.last()) else {
        return Err(format!("empty {what}"));
    };
    if b.len() > max {
        return Err(format!("{what} is longer than {max} bytes"));
    }
    if !first.is_ascii_alphabetic() {
        return Err(format!("{what} {s:?} must start with a letter"));
    }
    if !last.is_ascii_alphanumeric() {
        return Err(format!("{what} {s:?} must end with a letter or digit"));
    }
    if let Some(c) = b
        .iter()
        .find(|c| !(c.is_ascii_alphanumeric() || b"-_.".contains(c)))
    {
        return Err(format!("{what} {s:?} has a bad character {:?}", *c as char));
    }
    Ok(())
}

/// A device name: a letter or digit first and last, and letters, digits,
/// `-`, `_`, `.`, `:` between.
pub fn check_device_name(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let (Some(first), Some(last)) = (b.first(), b.last()) else {
        return Err("empty device name".into());
    };
    if b.len() > DEVICE_MAX {
        return Err(format!("device name is longer than {DEVICE_MAX} bytes"));
    }
    if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
        return Err(format!(
            "device name {s:?} must start and end with a letter or digit"
        ));
    }
    if let Some(c) = b
        .iter()
        .find(|c| !(c.is_ascii_alphanumeric() || b"-_.:".contains(c)))
    {
        return Err(format!("device name {s:?} has a bad character {:?}", *c as char));
    }
    Ok(())
}
