//! keepalived's lexical rules: `!` and `#` start a comment anywhere outside
//! double quotes (`\!` and `\#` are the characters themselves), a trailing
//! `\` continues the line, a double-quoted string is one word, and `{` and
//! `}` are tokens of their own even when glued to a word. A line starting
//! with `include` is replaced by the files its glob pattern matches, relative
//! to the directory of the file that includes them.

use std::{
    collections::BTreeMap,
    io,
    path::{Component, Path, PathBuf},
};

use super::{Item, Kind};
use crate::glob::{has_wildcard, NamePattern};

/// Where a token is: file (index into [`Lexed::files`]), 1-based line, and
/// its rank in the whole token stream, which orders the report as the text
/// reads even across included files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub file: u32,
    pub line: u32,
    pub seq: u32,
}

/// A word: a keyword or a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub text: String,
    /// It was written in double quotes.
    pub quoted: bool,
    pub pos: Pos,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok {
    Word(Word),
    Open(Pos),
    Close(Pos),
    /// End of a line that had tokens.
    End,
}

/// The token stream of a file and everything it includes.
#[derive(Debug, Default)]
pub struct Lexed {
    pub toks: Vec<Tok>,
    /// File names as the report shows them, indexed by [`Pos::file`].
    pub files: Vec<String>,
}

/// Includes nested deeper than this are not read (keepalived would loop).
pub const MAX_INCLUDE_DEPTH: usize = 8;
/// At most this many files are read in all.
const MAX_FILES: usize = 256;
/// At most this many tokens are read in all.
const MAX_TOKENS: usize = 2_000_000;
/// Larger files are not read.
const MAX_FILE_BYTES: u64 = 16 << 20;
/// A brace pattern expands to at most this many patterns.
const MAX_BRACE_EXPANSION: usize = 64;

/// The file system as the importer sees it, so tests can use memory.
pub trait Files {
    fn read(&self, path: &Path) -> io::Result<String>;
    /// The entries of a directory: name and whether it is a directory.
    fn list(&self, dir: &Path) -> io::Result<Vec<(String, bool)>>;
    fn is_file(&self, path: &Path) -> bool;
}

/// The real file system.
pub struct Disk;

impl Files for Disk {
    fn read(&self, path: &Path) -> io::Result<String> {
        let meta = std::fs::metadata(path)?;
        if !meta.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(io::Error::other("larger than 16 MiB"));
        }
        let bytes = std::fs::read(path)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<(String, bool)>> {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let is_dir = std::fs::metadata(e.path()).is_ok_and(|m| m.is_dir());
            out.push((e.file_name().to_string_lossy().into_owned(), is_dir));
        }
        Ok(out)
    }

    fn is_file(&self, path: &Path) -> bool {
        std::fs::metadata(path).is_ok_and(|m| m.is_file())
    }
}

/// Files held in memory, by normalised path.
#[derive(Debug, Default, Clone)]
pub struct MemFiles {
    files: BTreeMap<PathBuf, String>,
}

impl MemFiles {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, path: impl AsRef<Path>, text: impl Into<String>) -> &mut Self {
        self.files.insert(normalize(path.as_ref()), text.into());
        self
    }
}

impl Files for MemFiles {
    fn read(&self, path: &Path) -> io::Result<String> {
        self.files
            .get(&normalize(path))
            .cloned()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<(String, bool)>> {
        let dir = normalize(dir);
        let mut out: BTreeMap<String, bool> = BTreeMap::new();
        for p in self.files.keys() {
            let Ok(rest) = p.strip_prefix(&dir) else {
                continue;
            };
            let mut parts = rest.components();
            let Some(Component::Normal(first)) = parts.next() else {
                continue;
            };
            let is_dir = parts.next().is_some();
            *out.entry(first.to_string_lossy().into_owned()).or_default() |= is_dir;
        }
        if out.is_empty() {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        Ok(out.into_iter().collect())
    }

    fn is_file(&self, path: &Path) -> bool {
        self.files.contains_key(&normalize(path))
    }
}

/// `a/./b/../c` → `a/c`, without touching the file system.
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if matches!(out.components().next_back(), Some(Component::Normal(_))) {
                    out.pop();
                } else if !out.has_root() {
                    out.push("..");
                }
            }
            c => out.push(c.as_os_str()),
        }
    }
    out
}

struct Lexer<'a> {
    fs: &'a dyn Files,
    out: Lexed,
    report: &'a mut Vec<Item>,
    /// Normalised paths of the files being read, outermost first.
    stack: Vec<PathBuf>,
    seq: u32,
    full: bool,
}

/// Reads `path` and what it includes. Only a failure to read `path` itself
/// is an error; a missing or looping include is reported and skipped.
pub fn lex(path: &Path, fs: &dyn Files, report: &mut Vec<Item>) -> io::Result<Lexed> {
    let text = fs.read(path)?;
    let mut lx = Lexer {
        fs,
        out: Lexed::default(),
        report,
        stack: vec![normalize(path)],
        seq: 0,
        full: false,
    };
    lx.file(path, &text);
    Ok(lx.out)
}

impl Lexer<'_> {
    fn pos(&mut self, file: u32, line: u32) -> Pos {
        self.seq = self.seq.saturating_add(1);
        Pos {
            file,
            line,
            seq: self.seq,
        }
    }

    fn push(&mut self, t: Tok) {
        if self.out.toks.len() >= MAX_TOKENS {
            if !self.full {
                self.full = true;
                let pos: Pos = self
                    .out
                    .toks
                    .iter()
                    .rev()
                    .find_map(tok_pos)
                    .unwrap_or_default();
                self.report.push(Item::new(
                    Some(pos),
                    Kind::Dropped,
                    format!("more than {MAX_TOKENS} words: the rest is not read"),
                ));
            }
            return;
        }
        self.out.toks.push(t);
    }

    fn file(&mut self, path: &Path, text: &str) {
        let id = self.out.files.len() as u32;
        self.out.files.push(path.display().to_string());
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut lines = text.lines().enumerate();
        while let Some((i, raw)) = lines.next() {
            if self.full {
                return;
            }
            let line = u32::try_from(i + 1).unwrap_or(u32::MAX);
            let (mut text, mut cont, mut open_quote) = decomment(raw);
            while cont {
                let Some((_, next)) = lines.next() else { break };
                let (more, c, q) = decomment(next);
                text.push(' ');
                text.push_str(&more);
                (cont, open_quote) = (c, q);
            }
            let text = text.trim();
            if let Some(pattern) = include_pattern(text) {
                let pos = self.pos(id, line);
                self.include(pattern, &dir, pos);
                continue;
            }
            if open_quote {
                let pos = self.pos(id, line);
                self.report.push(Item::new(
                    Some(pos),
                    Kind::Note,
                    "unterminated quote: the quoted text runs to the end of the line".into(),
                ));
            }
            let before = self.out.toks.len();
            self.tokens(text, id, line);
            if self.out.toks.len() > before {
                self.push(Tok::End);
            }
        }
    }

    fn tokens(&mut self, s: &str, file: u32, line: u32) {
        let mut rest = s;
        loop {
            rest = rest.trim_start_matches(is_space);
            let Some(c) = rest.chars().next() else { return };
            match c {
                '{' | '}' => {
                    let pos = self.pos(file, line);
                    self.push(if c == '{' {
                        Tok::Open(pos)
                    } else {
                        Tok::Close(pos)
                    });
                    rest = &rest[1..];
                }
                '"' => {
                    let body = &rest[1..];
                    let (text, next) = match body.find('"') {
                        Some(end) => (&body[..end], &body[end + 1..]),
                        None => (body, ""),
                    };
                    let pos = self.pos(file, line);
                    self.push(Tok::Word(Word {
                        text: text.to_string(),
                        quoted: true,
                        pos,
                    }));
                    rest = next;
                }
                _ => {
                    let end = rest
                        .find(|c: char| is_space(c) || matches!(c, '"' | '{' | '}'))
                        .unwrap_or(rest.len());
                    let pos = self.pos(file, line);
                    self.push(Tok::Word(Word {
                        text: rest[..end].to_string(),
                        quoted: false,
                        pos,
                    }));
                    rest = &rest[end..];
                }
            }
        }
    }

    fn include(&mut self, pattern: &str, dir: &Path, pos: Pos) {
        let fail = |lx: &mut Self, msg: String| {
            lx.report.push(Item::new(
                Some(pos),
                Kind::Dropped,
                format!("include {pattern}: {msg}"),
            ))
        };
        let pat = pattern.trim();
        let pat = pat
            .strip_prefix('"')
            .and_then(|p| p.strip_suffix('"'))
            .unwrap_or(pat);
        if pat.is_empty() {
            return fail(self, "no file named".into());
        }
        if self.stack.len() > MAX_INCLUDE_DEPTH {
            return fail(
                self,
                format!("includes nested deeper than {MAX_INCLUDE_DEPTH} levels are not read"),
            );
        }
        let mut found = Vec::new();
        for p in expand_braces(pat) {
            let full = dir.join(&p);
            let mut m = glob(self.fs, &full);
            m.sort();
            found.extend(m);
        }
        if found.is_empty() {
            return fail(
                self,
                "no file matches (keepalived skips it too); whatever it held is missing here"
                    .into(),
            );
        }
        for f in found {
            if self.full {
                return;
            }
            let norm = normalize(&f);
            if self.stack.contains(&norm) {
                fail(
                    self,
                    format!("{} includes itself; not read again", f.display()),
                );
                continue;
            }
            if self.out.files.len() >= MAX_FILES {
                return fail(self, format!("more than {MAX_FILES} files: not read"));
            }
            match self.fs.read(&f) {
                Ok(text) => {
                    self.stack.push(norm);
                    self.file(&f, &text);
                    self.stack.pop();
                }
                Err(e) => fail(self, format!("{}: {e}", f.display())),
            }
        }
    }
}

fn tok_pos(t: &Tok) -> Option<Pos> {
    match t {
        Tok::Word(w) => Some(w.pos),
        Tok::Open(p) | Tok::Close(p) => Some(*p),
        Tok::End => None,
    }
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\x0b' | '\x0c' | '\r' | '\n')
}

/// The line without its comment: (text, continues on the next line, a
/// quote is left open).
fn decomment(line: &str) -> (String, bool, bool) {
    let mut out = String::with_capacity(line.len());
    let mut quote = false;
    let mut chars = line.chars().peekable();
    let mut cont = false;
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quote = !quote;
                out.push(c);
            }
            '\\' => match chars.peek() {
                Some(&n @ ('#' | '!')) if !quote => {
                    out.push(n);
                    chars.next();
                }
                Some(&n) => {
                    out.push(c);
                    out.push(n);
                    chars.next();
                }
                None => cont = true,
            },
            '!' | '#' if !quote => break,
            _ => out.push(c),
        }
    }
    (out, cont, quote)
}

/// `include PATTERN` (and keepalived's `includer`, `includem`, … forms).
fn include_pattern(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("include")?;
    let rest = match rest.chars().next()? {
        c if is_space(c) => rest,
        'r' | 'm' | 'w' | 'b' | 'a' => {
            let r = &rest[1..];
            r.starts_with(is_space).then_some(r)?
        }
        _ => return None,
    };
    Some(rest.trim())
}

/// `a{b,c}d` → `abd`, `acd` (glob's brace form); unbalanced braces stay.
pub fn expand_braces(p: &str) -> Vec<String> {
    // Bounds the recursion: such a pattern is not a real one anyway.
    if p.matches('{').count() > MAX_BRACE_EXPANSION {
        return vec![p.to_string()];
    }
    let mut out = vec![];
    expand_into(p, &mut out);
    out
}

fn expand_into(p: &str, out: &mut Vec<String>) {
    if out.len() >= MAX_BRACE_EXPANSION {
        return;
    }
    let bytes = p.as_bytes();
    let Some(open) = p.find('{') else {
        out.push(p.to_string());
        return;
    };
    let mut depth = 0usize;
    let mut commas = vec![];
    let mut close = None;
    for (i, &b) in bytes.iter().enumerate().skip(open) {
        match b {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(i);
                    break;
                }
            }
            b',' if depth == 1 => commas.push(i),
            _ => {}
        }
    }
    let Some(close) = close else {
        out.push(p.to_string());
        return;
    };
    if commas.is_empty() {
        // `{x}` is not an alternative: keep it and expand what follows.
        let (head, tail) = p.split_at(close + 1);
        let mut tails = vec![];
        expand_into(tail, &mut tails);
        for t in tails {
            if out.len() >= MAX_BRACE_EXPANSION {
                return;
            }
            out.push(format!("{head}{t}"));
        }
        return;
    }
    let (pre, post) = (&p[..open], &p[close + 1..]);
    let mut start = open + 1;
    for end in commas.into_iter().chain([close]) {
        expand_into(&format!("{pre}{}{post}", &p[start..end]), out);
        start = end + 1;
    }
}

/// The regular files `pattern` matches, sorted, as glob(3) finds them:
/// wildcards within a path component, hidden names only when the pattern
/// component starts with a dot.
pub fn glob(fs: &dyn Files, pattern: &Path) -> Vec<PathBuf> {
    let mut cands = vec![PathBuf::new()];
    for c in pattern.components() {
        let part = c.as_os_str().to_string_lossy();
        let wild = matches!(c, Component::Normal(_)) && has_wildcard(&part);
        let mut next = vec![];
        for cand in &cands {
            if !wild {
                next.push(cand.join(c.as_os_str()));
                continue;
            }
            let Ok(mut entries) = fs.list(cand) else {
                continue;
            };
            entries.sort();
            let pattern = NamePattern::new(&part);
            for (name, _) in entries {
                if name.starts_with('.') && !part.starts_with('.') {
                    continue;
                }
                if pattern.matches(&name) {
                    next.push(cand.join(&name));
                }
            }
        }
        cands = next;
        if cands.len() > MAX_FILES {
            cands.truncate(MAX_FILES);
        }
    }
    let mut files: Vec<PathBuf> = cands.into_iter().filter(|p| fs.is_file(p)).collect();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        let mut fs = MemFiles::new();
        fs.add("/k/keepalived.conf", text);
        let mut report = vec![];
        let l = lex(Path::new("/k/keepalived.conf"), &fs, &mut report).unwrap();
        l.toks
            .iter()
            .map(|t| match t {
                Tok::Word(w) if w.quoted => format!("\"{}\"@{}", w.text, w.pos.line),
                Tok::Word(w) => format!("{}@{}", w.text, w.pos.line),
                Tok::Open(_) => "{".into(),
                Tok::Close(_) => "}".into(),
                Tok::End => ";".into(),
            })
            .collect()
    }

    #[test]
    fn comments_quotes_and_braces() {
        assert_eq!(
            words("global_defs {\n  router_id lb1 # the node\n}\n! a comment\n"),
            [
                "global_defs@1",
                "{",
                ";",
                "router_id@2",
                "lb1@2",
                ";",
                "}",
                ";"
            ]
        );
        assert_eq!(
            words("virtual_ipaddress {192.168.4.252}"),
            ["virtual_ipaddress@1", "{", "192.168.4.252@1", "}", ";"]
        );
        assert_eq!(
            words("script \"killall -0 haproxy # not a comment\" ! comment"),
            ["script@1", "\"killall -0 haproxy # not a comment\"@1", ";"]
        );
        assert_eq!(words("auth_pass ab\\#cd"), ["auth_pass@1", "ab#cd@1", ";"]);
        assert_eq!(
            words("notify_master /a/b.sh \\\n   root\nx"),
            ["notify_master@1", "/a/b.sh@1", "root@1", ";", "x@3", ";"]
        );
        assert_eq!(words("a\"b c\"d"), ["a@1", "\"b c\"@1", "d@1", ";"]);
        assert_eq!(words("x \"open"), ["x@1", "\"open\"@1", ";"]);
    }

    #[test]
    fn includes_are_relative_globbed_and_bounded() {
        let mut fs = MemFiles::new();
        fs.add("/etc/k/keepalived.conf", "a\ninclude conf.d/*.conf\nb\n")
            .add("/etc/k/conf.d/2.conf", "two\n")
            .add("/etc/k/conf.d/1.conf", "one\ninclude ../keepalived.conf\n")
            .add("/etc/k/conf.d/x.txt", "no\n");
        let mut report = vec![];
        let l = lex(Path::new("/etc/k/keepalived.conf"), &fs, &mut report).unwrap();
        let w: Vec<&str> = l
            .toks
            .iter()
            .filter_map(|t| match t {
                Tok::Word(w) => Some(w.text.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(w, ["a", "one", "two", "b"]);
        assert_eq!(
            l.files,
            [
                "/etc/k/keepalived.conf",
                "/etc/k/conf.d/1.conf",
                "/etc/k/conf.d/2.conf"
            ]
        );
        assert_eq!(report.len(), 1, "{report:?}");
        assert!(report[0].msg.contains("includes itself"), "{report:?}");

        // A chain deeper than the bound stops with a report.
        let mut fs = MemFiles::new();
        for i in 0..20 {
            fs.add(
                format!("/d/{i}.conf"),
                format!("w{i}\ninclude {}.conf\n", i + 1),
            );
        }
        let mut report = vec![];
        let l = lex(Path::new("/d/0.conf"), &fs, &mut report).unwrap();
        assert_eq!(l.files.len(), MAX_INCLUDE_DEPTH + 1);
        assert!(report[0].msg.contains("nested deeper"), "{report:?}");
    }

    #[test]
    fn braces_and_paths() {
        assert_eq!(
            expand_braces("/a/{x,y{1,2}}.conf"),
            ["/a/x.conf", "/a/y1.conf", "/a/y2.conf"]
        );
        assert_eq!(expand_braces("{x}{a,b"), ["{x}{a,b"]);
        assert_eq!(normalize(Path::new("/a/./b/../c")), Path::new("/a/c"));
        assert_eq!(normalize(Path::new("../x/./y")), Path::new("../x/y"));
    }
}
