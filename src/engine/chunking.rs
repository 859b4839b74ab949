//! Splitting a long document into token-counted chunks with overlap, and merging the outputs of
//! the chunks into one answer. Pure.

use std::ops::Range;

/// How many document tokens fit in one chunk: the context minus the prompt's own tokens, the
/// tokens to generate, and a safety margin. `None` when nothing (or almost nothing) fits.
pub fn chunk_budget(
    n_ctx: u32,
    prompt_overhead: u32,
    max_tokens: u32,
    margin: u32,
) -> Option<usize> {
    let used = prompt_overhead as u64 + max_tokens as u64 + margin as u64;
    let left = (n_ctx as u64).checked_sub(used)?;
    (left >= 32).then_some(left as usize)
}

/// Windows of at most `chunk` tokens over `n_tokens`, each starting `overlap` tokens before the
/// previous one ended. One window for a text that fits. Deterministic, so a resumed job gets
/// the same chunks.
pub fn plan(n_tokens: usize, chunk: usize, overlap: usize) -> Vec<Range<usize>> {
    assert!(chunk > 0, "chunk size must be positive");
    if n_tokens <= chunk {
        return std::iter::once(0..n_tokens).collect();
    }
    let overlap = overlap.min(chunk / 2);
    let step = chunk - overlap;
    let mut out = Vec::new();
    let mut start = 0;
    loop {
        let end = (start + chunk).min(n_tokens);
        out.push(start..end);
        if end == n_tokens {
            return out;
        }
        start += step;
    }
}

/// The default overlap for a chunk size: an eighth, at most 256 tokens.
pub fn default_overlap(chunk: usize) -> usize {
    (chunk / 8).min(256)
}

/// Consecutive groups of parts whose sizes fit in `budget` together (a part larger than the
/// budget forms a group of its own). Used to reduce in rounds when all parts do not fit in
/// one prompt.
pub fn groups_within(sizes: &[usize], budget: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut total = 0;
    for (i, &s) in sizes.iter().enumerate() {
        if i > start && total + s > budget {
            out.push(start..i);
            start = i;
            total = 0;
        }
        total += s;
    }
    if start < sizes.len() {
        out.push(start..sizes.len());
    }
    out
}

/// Keywords: every chunk's items (one per line, or comma-separated), first seen first, without
/// duplicates (case-insensitive), list markers stripped.
pub fn merge_union_lines(parts: &[String]) -> String {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for part in parts {
        for item in part.lines().flat_map(|l| l.split(',')) {
            let item = item
                .trim()
                .trim_start_matches(['-', '*', '•'])
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .trim_start_matches(['.', ')'])
                .trim();
            if !item.is_empty() && seen.insert(item.to_lowercase()) {
                out.push(item.to_string());
            }
        }
    }
    out.join("\n")
}

/// The label a classification answer names: the first label (case-insensitive) it contains.
pub fn label_of<'a>(answer: &str, labels: &'a [String]) -> Option<&'a str> {
    let lower = answer.to_lowercase();
    labels
        .iter()
        .filter_map(|l| lower.find(&l.to_lowercase()).map(|pos| (pos, l)))
        .min_by_key(|(pos, _)| *pos)
        .map(|(_, l)| l.as_str())
}

/// Classification: the label most chunks chose; ties go to the label chosen earliest. When no
/// chunk named a label, the first chunk's answer stands.
pub fn merge_vote(parts: &[String], labels: &[String]) -> String {
    let mut tally: Vec<(&str, usize, usize)> = Vec::new(); // label, votes, first chunk
    for (i, p) in parts.iter().enumerate() {
        if let Some(l) = label_of(p, labels) {
            match tally.iter_mut().find(|t| t.0 == l) {
                Some(t) => t.1 += 1,
                None => tally.push((l, 1, i)),
            }
        }
    }
    tally
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)))
        .map(|t| t.0.to_string())
        .unwrap_or_else(|| {
            parts
                .first()
                .map(|p| p.trim().to_string())
                .unwrap_or_default()
        })
}

/// The first JSON object in a model's answer (models like to wrap it in prose or fences).
pub fn first_json_object(text: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let bytes = text.as_bytes();
    let mut start = 0;
    while let Some(off) = text[start..].find('{') {
        let open = start + off;
        let mut depth = 0i32;
        let mut in_str = false;
        let mut escaped = false;
        for (i, &b) in bytes.iter().enumerate().skip(open) {
            if in_str {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_str = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_str = true,
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        if let Ok(serde_json::Value::Object(m)) =
                            serde_json::from_str(&text[open..=i])
                        {
                            return Some(m);
                        }
                        break;
                    }
                }
                _ => {}
            }
        }
        start = open + 1;
    }
    None
}

/// Extraction: per field, the first chunk that gave a non-null, non-empty value. The result
/// is one JSON object with exactly the asked fields, in the asked order.
pub fn merge_json(parts: &[String], fields: &[String]) -> String {
    let objects: Vec<_> = parts.iter().filter_map(|p| first_json_object(p)).collect();
    let mut out = serde_json::Map::new();
    for f in fields {
        let value = objects
            .iter()
            .filter_map(|o| o.get(f))
            .find(|v| !v.is_null() && v.as_str() != Some(""))
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        out.insert(f.clone(), value);
    }
    serde_json::Value::Object(out).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_leaves_room_for_prompt_and_answer() {
        assert_eq!(chunk_budget(4096, 100, 512, 16), Some(3468));
        assert_eq!(chunk_budget(600, 100, 512, 16), None);
        assert_eq!(chunk_budget(660, 100, 512, 16), Some(32));
        assert_eq!(chunk_budget(659, 100, 512, 16), None);
    }

    #[test]
    fn plan_covers_everything_with_overlap() {
        assert_eq!(plan(10, 100, 10), vec![0..10]);
        assert_eq!(plan(0, 100, 10), vec![0..0]);
        assert_eq!(plan(100, 100, 10), vec![0..100]);
        let p = plan(250, 100, 20);
        assert_eq!(p, vec![0..100, 80..180, 160..250]);
        for n in [101usize, 999, 1000, 1001, 12_345] {
            for (chunk, overlap) in [(100usize, 0usize), (100, 30), (64, 63), (7, 3)] {
                let p = plan(n, chunk, overlap);
                assert_eq!(p[0].start, 0);
                assert_eq!(p.last().unwrap().end, n);
                for w in p.windows(2) {
                    assert!(w[1].start < w[0].end || overlap == 0 && w[1].start == w[0].end);
                    assert!(w[1].start > w[0].start, "progress");
                }
                assert!(p.iter().all(|r| r.len() <= chunk && !r.is_empty()));
            }
        }
    }

    #[test]
    fn groups_fit_the_budget() {
        assert_eq!(groups_within(&[10, 10, 10], 100), vec![0..3]);
        assert_eq!(groups_within(&[60, 60, 60], 100), vec![0..1, 1..2, 2..3]);
        assert_eq!(groups_within(&[30, 30, 50, 10], 70), vec![0..2, 2..4]);
        assert_eq!(groups_within(&[200, 10], 100), vec![0..1, 1..2]);
        assert!(groups_within(&[], 100).is_empty());
    }

    #[test]
    fn keywords_union_without_duplicates() {
        let parts = vec![
            "- rust\n- sled\n".to_string(),
            "1. Sled\n2. llama.cpp, tokio".to_string(),
        ];
        assert_eq!(merge_union_lines(&parts), "rust\nsled\nllama.cpp\ntokio");
    }

    #[test]
    fn vote_takes_the_majority_then_the_earliest() {
        let labels: Vec<String> = ["spam", "ham"].iter().map(|s| s.to_string()).collect();
        let parts: Vec<String> = ["Ham.", "spam", "SPAM!"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(merge_vote(&parts, &labels), "spam");
        let parts: Vec<String> = ["ham", "spam"].iter().map(|s| s.to_string()).collect();
        assert_eq!(merge_vote(&parts, &labels), "ham");
        let parts: Vec<String> = ["no idea"].iter().map(|s| s.to_string()).collect();
        assert_eq!(merge_vote(&parts, &labels), "no idea");
        assert_eq!(label_of("It is spam, not ham", &labels), Some("spam"));
    }

    #[test]
    fn json_merge_takes_first_values_in_field_order() {
        let fields: Vec<String> = ["name", "date", "city"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let parts = vec![
            "Sure! ```json\n{\"name\": \"Ada\", \"date\": null}\n```".to_string(),
            "{\"date\": \"1843\", \"name\": \"Other\", \"note\": \"{x}\"}".to_string(),
            "not json".to_string(),
        ];
        assert_eq!(
            merge_json(&parts, &fields),
            r#"{"name":"Ada","date":"1843","city":null}"#
        );
    }

    #[test]
    fn first_json_object_skips_braces_in_strings_and_broken_objects() {
        let m = first_json_object(r#"{broken {"a": "}{", "b": 1}"#).unwrap();
        assert_eq!(m.get("a").unwrap(), "}{");
        assert!(first_json_object("none here").is_none());
    }
}
