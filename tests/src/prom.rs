//! A strict checker of the Prometheus text exposition format (0.0.4), the
//! way Prometheus itself would refuse a scrape: every line is a `# HELP`,
//! `# TYPE`, comment or sample; names and labels are well formed; values
//! parse; a family's samples follow its TYPE and stay together; no series
//! appears twice; histogram buckets are ordered, cumulative and end in a
//! `+Inf` bucket equal to `_count`. (`prometheus-client` only writes the
//! format; nothing in the workspace reads it.)

use std::collections::{BTreeMap, HashMap, HashSet};

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name as written (`x_total`, `x_bucket`, ...).
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

fn metric_name_ok(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_' || ch == ':')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
}

fn label_name_ok(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

fn parse_value(v: &str) -> Option<f64> {
    match v {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ if v.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c)) => v.parse().ok(),
        _ => None,
    }
}

/// `{a="b",c="d"}` (without braces) -> labels.
fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let eq = s[i..]
            .find('=')
            .ok_or_else(|| format!("label without '=' in {{{s}}}"))?
            + i;
        let name = s[i..eq].trim();
        if !label_name_ok(name) {
            return Err(format!("bad label name {name:?}"));
        }
        if b.get(eq + 1) != Some(&b'"') {
            return Err(format!("label {name} value is not quoted"));
        }
        let mut j = eq + 2;
        let mut value = String::new();
        loop {
            match b.get(j) {
                None => return Err(format!("unterminated value of label {name}")),
                Some(b'"') => break,
                Some(b'\\') => {
                    match b.get(j + 1) {
                        Some(b'\\') => value.push('\\'),
                        Some(b'"') => value.push('"'),
                        Some(b'n') => value.push('\n'),
                        other => return Err(format!("bad escape {other:?} in label {name}")),
                    }
                    j += 2;
                }
                Some(_) => {
                    let ch = s[j..].chars().next().unwrap();
                    value.push(ch);
                    j += ch.len_utf8();
                }
            }
        }
        if out.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        i = j + 1;
        match b.get(i) {
            None => break,
            Some(b',') => i += 1,
            Some(c) => return Err(format!("unexpected {:?} after label {name}", *c as char)),
        }
    }
    Ok(out)
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(p) => line.split_at(p),
        None => return Err("sample without value".into()),
    };
    if !metric_name_ok(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let (labels, rest) = if let Some(r) = rest.strip_prefix('{') {
        // The closing brace is the first '}' outside a quoted value.
        let mut in_q = false;
        let mut esc = false;
        let mut end = None;
        for (k, ch) in r.char_indices() {
            match (in_q, esc, ch) {
                (true, true, _) => esc = false,
                (true, false, '\\') => esc = true,
                (_, _, '"') => in_q = !in_q,
                (false, _, '}') => {
                    end = Some(k);
                    break;
                }
                _ => {}
            }
        }
        let end = end.ok_or("unclosed label set")?;
        (parse_labels(&r[..end])?, &r[end + 1..])
    } else {
        (BTreeMap::new(), rest)
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if !rest.starts_with(' ') || fields.is_empty() || fields.len() > 2 {
        return Err("expected ' <value> [timestamp]'".into());
    }
    let value = parse_value(fields[0]).ok_or_else(|| format!("bad value {:?}", fields[0]))?;
    if let Some(ts) = fields.get(1) {
        ts.parse::<i64>().map_err(|_| format!("bad timestamp {ts:?}"))?;
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Which family a sample belongs to, given the family's TYPE.
fn belongs(sample: &str, family: &str, kind: &str) -> bool {
    match kind {
        "histogram" => [
            family.to_string() + "_bucket",
            family.to_string() + "_sum",
            family.to_string() + "_count",
        ]
        .contains(&sample.to_string()),
        "summary" => {
            sample == family || sample == format!("{family}_sum") || sample == format!("{family}_count")
        }
        _ => sample == family,
    }
}

/// Checks a whole exposition; returns its samples, or the first problem
/// with its line number.
pub fn parse(text: &str) -> Result<Vec<Sample>, String> {
    let mut samples = Vec::new();
    let mut types: HashMap<String, String> = HashMap::new();
    let mut current: Option<(String, String)> = None;
    let mut series = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let mut f = rest.trim_start().splitn(3, ' ');
            match (f.next(), f.next(), f.next()) {
                (Some("HELP"), Some(name), _) if metric_name_ok(name) => {}
                (Some("HELP"), ..) => return Err(at("bad HELP".into())),
                (Some("TYPE"), Some(name), Some(kind)) => {
                    if !metric_name_ok(name) {
                        return Err(at("bad TYPE name".into()));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(at(format!("unknown type {kind}")));
                    }
                    if types.insert(name.into(), kind.into()).is_some() {
                        return Err(at("second TYPE for a family".into()));
                    }
                    current = Some((name.into(), kind.into()));
                }
                (Some("TYPE"), ..) => return Err(at("TYPE needs a name and a type".into())),
                _ => {} // a comment
            }
            continue;
        }
        let s = parse_sample(line).map_err(at)?;
        match &current {
            Some((f, k)) if belongs(&s.name, f, k) => {}
            _ => {
                if types.iter().any(|(f, k)| belongs(&s.name, f, k)) {
                    return Err(at("sample apart from its family".into()));
                }
            }
        }
        if !series.insert((s.name.clone(), format!("{:?}", s.labels))) {
            return Err(at("series appears twice".into()));
        }
        samples.push(s);
    }
    check_histograms(&samples, &types)?;
    Ok(samples)
}

fn check_histograms(samples: &[Sample], types: &HashMap<String, String>) -> Result<(), String> {
    for (family, _) in types.iter().filter(|(_, k)| *k == "histogram") {
        // Group buckets by their labels other than `le`.
        let mut groups: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for s in samples.iter().filter(|s| s.name == format!("{family}_bucket")) {
            let le = s
                .labels
                .get("le")
                .ok_or_else(|| format!("{family}_bucket without le"))?;
            let le = parse_value(le).ok_or_else(|| format!("{family}: bad le {le:?}"))?;
            let mut rest = s.labels.clone();
            rest.remove("le");
            groups.entry(format!("{rest:?}")).or_default().push((le, s.value));
        }
        for (labels, buckets) in &groups {
            let ordered = buckets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1);
            if !ordered {
                return Err(format!("{family}{labels}: buckets not ascending and cumulative"));
            }
            let Some(&(le, inf_count)) = buckets.last() else {
                continue;
            };
            if le != f64::INFINITY {
                return Err(format!("{family}{labels}: no +Inf bucket"));
            }
            let count = samples
                .iter()
                .find(|s| {
                    let mut l = s.labels.clone();
                    l.remove("le");
                    s.name == format!("{family}_count") && format!("{l:?}") == *labels
                })
                .ok_or_else(|| format!("{family}{labels}: no _count"))?;
            if count.value != inf_count {
                return Err(format!(
                    "{family}{labels}: _count {} != +Inf bucket {inf_count}",
                    count.value
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "# HELP a_total Things.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"uote\"} 3\n\
        # TYPE h histogram\nh_bucket{le=\"0.5\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.9\nh_count 2\n# TYPE g gauge\ng -1.5e3\n";

    #[test]
    fn accepts_well_formed_text() {
        let s = parse(GOOD).unwrap();
        assert_eq!(s.len(), 6);
        assert_eq!(s[0].labels["y"], "q\"uote");
        assert_eq!(s[5].value, -1500.0);
    }

    #[test]
    fn refuses_what_prometheus_would() {
        for bad in [
            "9x 1\n",
            "a{x=1} 1\n",
            "a{x=\"1\"\n",
            "a one\n",
            "a 1 2 3\n",
            "# TYPE a counter\n# TYPE a gauge\na 1\n",
            "# TYPE a wat\n",
            "a 1\na 2\n",
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n",
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_count 1\n",
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 1\n",
            "# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\na{z=\"2\"} 1\n",
            "a{x=\"\\t\"} 1\n",
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
    }
}
