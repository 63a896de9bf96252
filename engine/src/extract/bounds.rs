//! What a JSONPath may ask of the engine, checked before it is parsed.
//!
//! Specs come from the community, and an RFC 9535 path can be made to cost far more than its
//! length suggests: the parser backtracks, so each filter nested in a filter doubles the time to
//! parse (22 levels in 540 characters took seconds, a few more hang); it recurses, so 4,000
//! `(` overflow the stack; and evaluation multiplies: each `..` walks the whole document again
//! (`$..*..*..*` over 500 KB selected 6.9 million nodes), a filter that queries the root (`$`)
//! walks it once per candidate, and a segment that names a selector twice selects its nodes
//! twice, so `['a','a']` repeated doubles the result at each step.
//!
//! The limits below are far above what real connectors write (the longest path in the catalog is
//! under 80 characters, with one filter and at most one `..`) and low enough that the worst path
//! they allow parses in well under a millisecond and selects at most [`MAX_FAN_OUT`] times the
//! nodes of the document.

/// The longest JSONPath, in bytes.
pub const MAX_LENGTH: usize = 512;

/// Brackets and parentheses open at once.
pub const MAX_NESTING: usize = 8;

/// Filters inside filters (`$[?@.a[?@.b]]` is two).
pub const MAX_FILTER_NESTING: usize = 2;

/// The most times one node can be selected: the product over all segments of their numbers of
/// selectors.
pub const MAX_FAN_OUT: u64 = 64;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    /// `[`: a segment; a filter once a `?` is seen at its level.
    Segment { filter: bool, selectors: u64 },
    /// `(`: grouping or a function's arguments.
    Paren,
}

/// Whether `source` stays within the limits; the reason when it does not. Malformed paths that
/// stay within them are left to the parser, which says what is wrong.
pub(super) fn check(source: &str) -> Result<(), String> {
    if source.len() > MAX_LENGTH {
        return Err(format!(
            "it is {} characters long; a JSONPath may be at most {MAX_LENGTH}",
            source.len()
        ));
    }
    let mut open: Vec<Open> = Vec::new();
    let mut descendants = 0;
    let mut fan_out: u64 = 1;
    let in_filter = |open: &[Open]| {
        open.iter()
            .any(|frame| matches!(frame, Open::Segment { filter: true, .. }))
    };
    let mut chars = source.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            '\'' | '"' => {
                // A string literal: skip to its closing quote, escapes included.
                while let Some((_, inner)) = chars.next() {
                    match inner {
                        '\\' => {
                            chars.next();
                        }
                        _ if inner == c => break,
                        _ => {}
                    }
                }
            }
            '[' | '(' => {
                open.push(if c == '[' {
                    Open::Segment {
                        filter: false,
                        selectors: 1,
                    }
                } else {
                    Open::Paren
                });
                if open.len() > MAX_NESTING {
                    return Err(format!(
                        "it nests brackets and parentheses more than {MAX_NESTING} deep"
                    ));
                }
            }
            ']' | ')' => {
                if let Some(Open::Segment { selectors, .. }) = open.pop() {
                    fan_out = fan_out.saturating_mul(selectors);
                    if fan_out > MAX_FAN_OUT {
                        return Err(format!(
                            "its segments' selectors multiply to more than {MAX_FAN_OUT} (a segment that lists several selectors selects each node once per selector)"
                        ));
                    }
                }
            }
            ',' => {
                if let Some(Open::Segment { selectors, .. }) = open.last_mut() {
                    *selectors += 1;
                }
            }
            '?' => {
                if let Some(Open::Segment { filter, .. }) = open.last_mut() {
                    *filter = true;
                }
                let filters = open
                    .iter()
                    .filter(|frame| matches!(frame, Open::Segment { filter: true, .. }))
                    .count();
                if filters > MAX_FILTER_NESTING {
                    return Err(format!(
                        "it nests filters more than {MAX_FILTER_NESTING} deep"
                    ));
                }
            }
            '$' if at > 0 && in_filter(&open) => {
                return Err(
                    "a filter queries the whole document (`$`) for every candidate; filters may only look at the candidate (`@`)".to_owned(),
                );
            }
            '.' if chars.peek().is_some_and(|(_, next)| *next == '.') => {
                chars.next();
                if in_filter(&open) {
                    return Err(
                        "a filter searches descendants (`..`) of every candidate; filters may only follow names and indexes".to_owned(),
                    );
                }
                descendants += 1;
                if descendants > 1 {
                    return Err(
                        "it searches descendants (`..`) more than once; each `..` walks the whole document again".to_owned(),
                    );
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalogs_kinds_of_path_are_within_the_limits() {
        for path in [
            "$.mediaItems[*]",
            "$['@odata.nextLink']",
            "$.mediaMetadata['photo','video'].cameraMake",
            "$.data..[?@.media_url && @.media_type != 'photo']",
            "$.payload.headers[?@.name == 'Subject'].value",
            "$.changes[?@.removed == true].fileId",
            "$[?match(@.name, '[a-z]+\\\\]')]",
            "$['a,b'][?@['x,y'] == ')']",
            "$..id",
        ] {
            assert_eq!(check(path), Ok(()), "{path}");
        }
    }

    #[test]
    fn costly_paths_are_refused_with_the_reason() {
        let refused = |path: &str, reason: &str| {
            let error = check(path).unwrap_err();
            assert!(error.contains(reason), "{path}: {error}");
        };
        refused(&format!("$.{}", "a".repeat(MAX_LENGTH)), "at most 512");
        refused(
            &format!("$[?{}@.a{}]", "(".repeat(8), ")".repeat(8)),
            "8 deep",
        );
        refused("$[?@.a[?@.b[?@.c]]]", "filters more than 2 deep");
        refused("$[?@.a == $.b]", "whole document");
        refused("$..*..*", "more than once");
        refused("$[?@..a]", "descendants (`..`) of every candidate");
        refused(
            "$['a','a','a','a']['a','a','a','a']['a','a','a','a','a']",
            "multiply",
        );
    }

    #[test]
    fn the_root_of_a_filters_own_path_is_not_a_query() {
        // `$` starting the path, and inside strings, is not a filter reading the root.
        assert_eq!(check("$.items[?@.currency == '$']"), Ok(()));
    }
}
