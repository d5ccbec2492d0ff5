//! The name/value block carried by SYN_STREAM, SYN_REPLY and HEADERS.

/// Header pairs in the order they were sent. SPDY requires lower-case names;
/// [`Headers::add`] lower-cases them and lookups ignore case, so callers can
/// use the spellings Kubernetes uses (`streamType`, `requestID`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a pair (a second value for a name is kept as another pair and
    /// sent NUL-joined, as SPDY encodes repeated headers).
    pub fn add(&mut self, name: &str, value: &str) -> &mut Self {
        self.0.push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    /// Builder form of [`Headers::add`].
    #[must_use]
    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.add(name, value);
        self
    }

    /// The first value of `name`, compared case-insensitively.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Bytes these headers hold in memory, for budgets: the text plus a
    /// per-pair overhead (as HTTP/2's header list size counts 32 bytes).
    pub fn cost(&self) -> usize {
        self.0
            .iter()
            .map(|(n, v)| n.len() + v.len() + 32 + 2 * std::mem::size_of::<String>())
            .sum()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Groups values by name in first-seen order: SPDY sends each name once
    /// with its values joined by NUL.
    pub(crate) fn grouped(&self) -> Vec<(&str, Vec<&str>)> {
        let mut out: Vec<(&str, Vec<&str>)> = Vec::new();
        for (n, v) in &self.0 {
            match out.iter_mut().find(|(name, _)| name == n) {
                Some((_, vals)) => vals.push(v),
                None => out.push((n, vec![v])),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Headers;

    #[test]
    fn names_are_lower_cased_and_lookups_ignore_case() {
        let h = Headers::new().with("streamType", "stdin").with("Port", "80");
        assert_eq!(h.get("streamtype"), Some("stdin"));
        assert_eq!(h.get("STREAMTYPE"), Some("stdin"));
        assert_eq!(h.iter().next(), Some(("streamtype", "stdin")));
        assert_eq!(h.get("requestID"), None);
    }

    #[test]
    fn repeated_names_group_in_first_seen_order() {
        let h = Headers::new().with("a", "1").with("b", "2").with("A", "3");
        assert_eq!(h.grouped(), vec![("a", vec!["1", "3"]), ("b", vec!["2"])]);
    }
}
