//! The comments the YAML will carry and the keys it shows, by key path.

use std::collections::{BTreeMap, BTreeSet};

/// Comments and shown keys, by key path (`vrrp_instances[0].priority`).
/// Paths are relative while an item is built, then moved under its place.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ann {
    /// Comment lines above a key or a list item.
    pub above: BTreeMap<String, Vec<String>>,
    /// A comment at the end of a key's line.
    pub trail: BTreeMap<String, Vec<String>>,
    /// Keys written even when they hold the default: keepalived's file had them.
    pub shown: BTreeSet<String>,
}

/// `prefix` + `rel`: `a[0]` + `b` → `a[0].b`; `a` + `[1]` → `a[1]`.
pub fn sub(prefix: &str, rel: &str) -> String {
    if rel.is_empty() {
        prefix.to_string()
    } else if prefix.is_empty() {
        rel.to_string()
    } else if rel.starts_with('[') {
        format!("{prefix}{rel}")
    } else {
        format!("{prefix}.{rel}")
    }
}

impl Ann {
    /// Adds a comment line above `path`.
    pub fn above(&mut self, path: &str, text: impl Into<String>) {
        self.above
            .entry(path.to_string())
            .or_default()
            .push(text.into());
    }

    /// Adds a comment at the end of `path`'s line.
    pub fn trail(&mut self, path: &str, text: impl Into<String>) {
        self.trail
            .entry(path.to_string())
            .or_default()
            .push(text.into());
    }

    /// Writes `path` even when it holds the default.
    pub fn show(&mut self, path: &str) {
        self.shown.insert(path.to_string());
    }

    /// Whether `path` has anything to say, so the emitter writes it.
    pub fn has(&self, path: &str) -> bool {
        self.shown.contains(path) || self.above.contains_key(path) || self.trail.contains_key(path)
    }

    /// Moves `other` under `prefix`.
    pub fn merge(&mut self, prefix: &str, other: Ann) {
        for (k, v) in other.above {
            self.above.entry(sub(prefix, &k)).or_default().extend(v);
        }
        for (k, v) in other.trail {
            self.trail.entry(sub(prefix, &k)).or_default().extend(v);
        }
        for k in other.shown {
            self.shown.insert(sub(prefix, &k));
        }
    }
}
