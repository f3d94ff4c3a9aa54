//! Just enough Markdown for the tidy checks that read ARCHITECTURE.md: a section by its heading,
//! its subsections, and the names it writes in backticks.

/// The body of the level-2 section whose heading is `heading` (as in `## Code map`), up to the
/// next level-2 heading; `None` when there is no such section.
pub(crate) fn section<'a>(text: &'a str, heading: &str) -> Option<&'a str> {
    let mut start = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_end();
        if let Some(begun) = start {
            if trimmed.starts_with("## ") {
                return Some(&text[begun..offset]);
            }
        } else if trimmed == heading {
            start = Some(offset + line.len());
        }
        offset += line.len();
    }
    start.map(|begun| &text[begun..])
}

/// The level-3 subsections of `body`, as (heading text without `### `, body) pairs.
pub(crate) fn subsections(body: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut current: Option<(&str, usize)> = None;
    let mut offset = 0;
    for line in body.split_inclusive('\n') {
        if let Some(heading) = line.strip_prefix("### ") {
            if let Some((name, begun)) = current {
                out.push((name, &body[begun..offset]));
            }
            current = Some((heading.trim(), offset + line.len()));
        }
        offset += line.len();
    }
    if let Some((name, begun)) = current {
        out.push((name, &body[begun..]));
    }
    out
}

/// The inline code spans of `text` (what stands between pairs of backticks), with a line break
/// inside a span read as a space, as Markdown does. A backtick left without its pair opens no span.
pub(crate) fn code_spans(text: &str) -> Vec<String> {
    let pieces: Vec<&str> = text.split('`').collect();
    pieces
        .iter()
        .enumerate()
        .filter(|&(i, _)| i % 2 == 1 && i + 1 < pieces.len())
        .map(|(_, span)| span.replace('\n', " "))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str =
        "# Title\n\n## One\n\nfirst\n\n### `a`\n\nx `p.rs`\n\n### `b/`\n\ny\n\n## Two\n\nsecond\n";

    #[test]
    fn sections_end_at_the_next_level_two_heading() {
        assert_eq!(
            section(PAGE, "## One")
                .map(str::trim)
                .map(|s| s.starts_with("first")),
            Some(true)
        );
        assert!(!section(PAGE, "## One").unwrap_or("").contains("second"));
        assert_eq!(section(PAGE, "## Two").map(str::trim), Some("second"));
        assert_eq!(section(PAGE, "## Three"), None);
    }

    #[test]
    fn subsections_split_at_level_three_headings() {
        let subs = subsections(section(PAGE, "## One").unwrap_or(""));
        let headings: Vec<&str> = subs.iter().map(|(h, _)| *h).collect();
        assert_eq!(headings, ["`a`", "`b/`"]);
        assert_eq!(subs[0].1.trim(), "x `p.rs`");
    }

    #[test]
    fn code_spans_pair_backticks_across_lines() {
        assert_eq!(code_spans("a `b` c `d\ne` f `g"), ["b", "d e"]);
    }
}
