//! The environment Berth gives processes that bring none of their own.

/// Expands to the default `PATH` literal (so [`DEFAULT_PATH_ENV`] can be
/// built from it at compile time).
macro_rules! default_path {
    () => {
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    };
}

/// `PATH` for a process whose environment names none (Docker's default,
/// which images are built against): shims, CNI plugins, a container
/// without `PATH`.
pub const DEFAULT_PATH: &str = default_path!();

/// [`DEFAULT_PATH`] as an environment entry.
pub const DEFAULT_PATH_ENV: &str = concat!("PATH=", default_path!());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_is_the_path() {
        assert_eq!(DEFAULT_PATH_ENV.strip_prefix("PATH="), Some(DEFAULT_PATH));
    }
}
