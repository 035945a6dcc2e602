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
        // globset reads braces as alternatives; fnmatch does not.
        let escaped = pattern.replace('{', "\\{").replace('}', "\\}");
        let m = GlobBuilder::new(&escaped)
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

/// Whether `name` matches `pattern` (see [`NamePattern`]).
pub fn matches(pattern: &str, name: &str) -> bool {
    NamePattern::new(pattern).matches(name)
}

#[cfg(test)]
mod tests {
    use super::matches;

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
        assert!(
            matches("*", ".hidden"),
            "the caller decides on hidden names"
        );
    }
}
