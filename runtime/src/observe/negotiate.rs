//! Content negotiation for the z-pages, as Kubernetes v1.35 components do
//! it: plain text unless the `Accept` header asks for the versioned JSON
//! object with all of `g`, `v` and `as` (`application/json;v=v1alpha1;
//! g=config.k8s.io;as=Statusz`). An Accept header that allows neither (an
//! unknown version, bare `application/json`) is answered 406 with the list
//! of what is served.

/// The API group of the z-page objects.
pub const GROUP: &str = "config.k8s.io";
/// The one version served.
pub const VERSION: &str = "v1alpha1";

/// What to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain` (for people; no compatibility promise).
    Text,
    /// The versioned JSON object.
    Json,
}

/// Nothing the client accepts is served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("only the following media types are accepted: {}", .supported.join(", "))]
pub struct NotAcceptable {
    /// What is served, most specific first.
    pub supported: Vec<String>,
}

/// The JSON media type for `kind` (`Statusz`, `Flagz`).
pub fn json_media_type(kind: &str) -> String {
    format!("application/json;v={VERSION};g={GROUP};as={kind}")
}

/// One media range of an Accept header.
struct Range<'a> {
    main: String,
    sub: String,
    params: Vec<(String, &'a str)>,
    q: f32,
}

fn parse_range(item: &str) -> Option<Range<'_>> {
    let mut parts = item.split(';');
    let (main, sub) = parts.next()?.trim().split_once('/')?;
    let mut params = Vec::new();
    let mut q = 1.0;
    for p in parts {
        let (k, v) = p.split_once('=')?;
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().trim_matches('"'));
        if k == "q" {
            q = v.parse().ok()?;
        } else {
            params.push((k, v));
        }
    }
    Some(Range {
        main: main.trim().to_ascii_lowercase(),
        sub: sub.trim().to_ascii_lowercase(),
        params,
        q,
    })
}

impl Range<'_> {
    fn param(&self, k: &str) -> Option<&str> {
        self.params.iter().find(|(key, _)| key == k).map(|(_, v)| *v)
    }

    /// What this range selects for `kind`, if anything.
    fn selects(&self, kind: &str) -> Option<Format> {
        let typed = ["g", "v", "as"].iter().any(|k| self.param(k).is_some());
        match (self.main.as_str(), self.sub.as_str()) {
            ("text", "plain" | "*") | ("*", "*") if !typed => Some(Format::Text),
            ("application", "json" | "*") => {
                let want = (Some(GROUP), Some(VERSION), Some(kind));
                (self.param("g"), self.param("v"), self.param("as"))
                    .eq(&want)
                    .then_some(Format::Json)
            }
            _ => None,
        }
    }
}

/// Picks the format for `kind` from an Accept header (None or blank: text).
pub fn negotiate(accept: Option<&str>, kind: &str) -> Result<Format, NotAcceptable> {
    let accept = accept.map(str::trim).unwrap_or_default();
    if accept.is_empty() {
        return Ok(Format::Text);
    }
    let mut ranges: Vec<Range<'_>> = accept.split(',').filter_map(parse_range).collect();
    // Highest q first; equal q keeps the client's order.
    ranges.sort_by(|a, b| b.q.total_cmp(&a.q));
    ranges
        .iter()
        .filter(|r| r.q > 0.0)
        .find_map(|r| r.selects(kind))
        .ok_or_else(|| NotAcceptable {
            supported: vec![json_media_type(kind), "text/plain".into()],
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_unless_the_versioned_json_is_asked_for() {
        let n = |a: &str| negotiate(Some(a), "Statusz");
        assert_eq!(negotiate(None, "Statusz"), Ok(Format::Text));
        assert_eq!(n(""), Ok(Format::Text));
        assert_eq!(n("*/*"), Ok(Format::Text), "curl's default");
        assert_eq!(n("text/plain; charset=utf-8"), Ok(Format::Text));
        assert_eq!(
            n("application/json;v=v1alpha1;g=config.k8s.io;as=Statusz"),
            Ok(Format::Json)
        );
        assert_eq!(
            n("application/json; as=Statusz; g=config.k8s.io; v=v1alpha1"),
            Ok(Format::Json),
            "parameter order and spaces do not matter"
        );
        assert_eq!(
            n("text/plain;q=0.5, application/json;v=v1alpha1;g=config.k8s.io;as=Statusz"),
            Ok(Format::Json)
        );
        assert_eq!(
            n("application/json;v=v9;g=config.k8s.io;as=Statusz, text/plain;q=0.1"),
            Ok(Format::Text),
            "an unknown version falls back to what else is accepted"
        );
    }

    #[test]
    fn unknown_versions_and_incomplete_json_are_not_acceptable() {
        for a in [
            "application/json;v=v1;g=config.k8s.io;as=Statusz",
            "application/json;v=v1alpha1;g=config.k8s.io;as=Flagz",
            "application/json",
            "application/json;v=v1alpha1;as=Statusz",
            "application/yaml",
            "text/plain;q=0",
            "text/html",
        ] {
            let e = negotiate(Some(a), "Statusz").unwrap_err();
            assert_eq!(
                e.supported,
                vec![
                    "application/json;v=v1alpha1;g=config.k8s.io;as=Statusz".to_string(),
                    "text/plain".to_string()
                ],
                "{a}"
            );
            assert!(e.to_string().contains("as=Statusz, text/plain"), "{e}");
        }
        assert_eq!(
            negotiate(
                Some("application/json;v=v1alpha1;g=config.k8s.io;as=Flagz"),
                "Flagz"
            ),
            Ok(Format::Json)
        );
    }
}
