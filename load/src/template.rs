//! Templates for stream/publish paths and publish bodies, and extraction of the load fields
//! from a received payload.
//!
//! Placeholders: `{org}`, `{seq}`, `{sent_ms}`, `{sent_us}`. Any other `{...}` text (JSON braces)
//! is literal.

use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    Org,
    Seq,
    SentMs,
    SentUs,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Var(Var),
}

/// A compiled template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// Values substituted into a template.
#[derive(Debug, Clone, Copy)]
pub struct Vars<'a> {
    pub org: &'a str,
    pub seq: u64,
    pub sent_us: u64,
}

impl Template {
    pub fn parse(s: &str) -> Template {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = s;
        'outer: while !rest.is_empty() {
            for (name, var) in [
                ("{org}", Var::Org),
                ("{seq}", Var::Seq),
                ("{sent_ms}", Var::SentMs),
                ("{sent_us}", Var::SentUs),
            ] {
                if let Some(r) = rest.strip_prefix(name) {
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Var(var));
                    rest = r;
                    continue 'outer;
                }
            }
            let c = rest.chars().next().unwrap_or_default();
            lit.push(c);
            rest = &rest[c.len_utf8()..];
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Template { parts }
    }

    /// True if the template uses `{name}` (`org`, `seq`, `sent_ms` or `sent_us`).
    pub fn uses(&self, name: &str) -> bool {
        self.parts.iter().any(|p| {
            matches!(
                (p, name),
                (Part::Var(Var::Org), "org")
                    | (Part::Var(Var::Seq), "seq")
                    | (Part::Var(Var::SentMs), "sent_ms")
                    | (Part::Var(Var::SentUs), "sent_us")
            )
        })
    }

    /// Append the rendered template to `out`.
    pub fn render_into(&self, vars: &Vars<'_>, out: &mut String) {
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Var(Var::Org) => out.push_str(vars.org),
                Part::Var(Var::Seq) => {
                    let _ = write!(out, "{}", vars.seq);
                }
                Part::Var(Var::SentMs) => {
                    let _ = write!(out, "{}", vars.sent_us / 1000);
                }
                Part::Var(Var::SentUs) => {
                    let _ = write!(out, "{}", vars.sent_us);
                }
            }
        }
    }

    pub fn render(&self, vars: &Vars<'_>) -> String {
        let mut s = String::new();
        self.render_into(vars, &mut s);
        s
    }
}

/// The unsigned integer after `"key"` (optional whitespace, `:`, optional whitespace) in `data`,
/// at its first occurrence. Works on any JSON text that carries the field, whether it is the
/// whole data (a raw payload) or nested in an envelope.
pub fn extract_u64(data: &[u8], key: &str) -> Option<u64> {
    let k = key.as_bytes();
    let mut from = 0;
    while from + k.len() + 2 <= data.len() {
        let pos = from
            + data[from..]
                .windows(k.len() + 2)
                .position(|w| w[0] == b'"' && w[k.len() + 1] == b'"' && &w[1..=k.len()] == k)?;
        let mut i = pos + k.len() + 2;
        while data.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
            i += 1;
        }
        if data.get(i) == Some(&b':') {
            i += 1;
            while data.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
                i += 1;
            }
            let start = i;
            let mut v: u64 = 0;
            while let Some(d) = data.get(i).filter(|b| b.is_ascii_digit()) {
                v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
                i += 1;
            }
            return (i > start).then_some(v);
        }
        from = pos + 1;
    }
    None
}

/// Sequence number and send time (µs since the epoch) carried by a load event: `seq`, and
/// `sent_us` or else `sent_ms` (× 1000).
pub fn extract_load_fields(data: &[u8]) -> (Option<u64>, Option<u64>) {
    let seq = extract_u64(data, "seq");
    let sent = extract_u64(data, "sent_us")
        .or_else(|| extract_u64(data, "sent_ms").and_then(|ms| ms.checked_mul(1000)));
    (seq, sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_templates() {
        let t = Template::parse(
            r#"{"event":"load.tick","payload":{"seq":{seq},"sent_ms":{sent_ms},"o":"{org}"}}"#,
        );
        let v = Vars {
            org: "load_1",
            seq: 42,
            sent_us: 1_700_000_000_123_456,
        };
        assert_eq!(
            t.render(&v),
            r#"{"event":"load.tick","payload":{"seq":42,"sent_ms":1700000000123,"o":"load_1"}}"#
        );
        assert!(t.uses("seq") && t.uses("sent_ms") && t.uses("org") && !t.uses("sent_us"));
        let p = Template::parse("/v1/orgs/{org}/stream?x={y}é");
        assert_eq!(p.render(&v), "/v1/orgs/load_1/stream?x={y}é");
        assert_eq!(Template::parse("{sent_us}").render(&v), "1700000000123456");
    }

    #[test]
    fn extract_fields() {
        let env = br#"{"id":"evt_1","org_id":"o","event":"load.tick","payload":{"seq":17,"sent_ms":1700000000123},"cursor":"1-0"}"#;
        assert_eq!(
            extract_load_fields(env),
            (Some(17), Some(1_700_000_000_123_000))
        );
        assert_eq!(
            extract_load_fields(br#"{"seq" : 3, "sent_us":5, "sent_ms":9}"#),
            (Some(3), Some(5))
        );
        assert_eq!(
            extract_u64(br#"{"sequence":1,"xseq":2,"seq":"a","seq":4}"#, "seq"),
            None
        );
        assert_eq!(extract_u64(br#"{"a":"seq","seq":4}"#, "seq"), Some(4));
        assert_eq!(
            extract_u64(br#"{"seq":99999999999999999999999}"#, "seq"),
            None
        );
        assert_eq!(extract_load_fields(b"hello"), (None, None));
    }
}
