//! File-name patterns for `include`, in both config languages, with
//! fnmatch(3)'s meaning: `*`, `?`, `[a-z]`, `[!x]` and `\` escapes within
//! one name; an unclosed `[` and braces are ordinary characters (the
//! importer expands keepalived's braces itself, before matching).

use globset::{GlobBuilder, GlobMatcher};

/// Whether `s` holds a wildcard.
pub fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// A compiled pattern for one path component.
pub struct NamePattern(Option<GlobMatcher>, String);

impl NamePattern {
    /// Compiles `pattern`; one globset cannot read (an empty range such
    /// as `[z-a]`, say) matches only itself, as a literal name.
    pub fn new(pattern: &str) -> NamePattern {
        let m = GlobBuilder::new(&literal_braces(pattern))
            .literal_separator(true)
            .backslash_escape(true)
            .allow_unclosed_class(true)
            .build()
            .ok()
            .map(|g| g.compile_matcher());
        NamePattern(m, pattern.to_string())
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        match &self.0 {
            Some(m) => m.is_match(name),
            None => name == self.1,
        }
    }
}

/// `pattern` with its braces escaped: globset reads them as alternatives,
/// fnmatch as themselves. Braces already escaped, or in a bracket
/// expression (where globset reads them as themselves), stay.
fn literal_braces(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars().peekable();
    let mut in_class = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                out.push(c);
                out.extend(chars.next());
            }
            '[' if !in_class => {
                in_class = true;
                out.push(c);
                // A `]` first in the class (after any `!` or `^`) is a member.
                if let Some(&n) = chars.peek().filter(|n| matches!(n, '!' | '^')) {
                    out.push(n);
                    chars.next();
                }
                if let Some(&n) = chars.peek().filter(|n| **n == ']') {
                    out.push(n);
                    chars.next();
                }
            }
            ']' if in_class => {
                in_class = false;
                out.push(c);
            }
            '{' | '}' if !in_class => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::NamePattern;

    fn matches(pattern: &str, name: &str) -> bool {
        NamePattern::new(pattern).matches(name)
    }

    #[test]
    fn fnmatch_meaning() {
        assert!(matches("*.conf", "a.conf"));
        assert!(!matches("*.conf", "a.conf.bak"));
        assert!(matches("vs-[0-9]?.c*", "vs-12.conf"));
        assert!(matches("[!a]*", "b"));
        assert!(!matches("[!a]*", "a"));
        assert!(matches("[^a]*", "b"));
        assert!(matches("a[", "a["));
        assert!(matches("**", ""));
        assert!(matches("\\*", "*") && !matches("\\*", "x"));
        assert!(matches("{a,b}", "{a,b}") && !matches("{a,b}", "a"));
        assert!(matches("a\\{b}", "a{b}") && matches("[{]x", "{x"));
        assert!(!matches("[{]x", "\\x") && matches("[]{]*", "]z") && matches("[!]]", "x"));
        assert!(
            matches("*", ".hidden"),
            "the caller decides on hidden names"
        );
    }
}
