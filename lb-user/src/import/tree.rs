//! Tokens → statements: a keyword, its arguments up to the end of the line
//! or a brace, and the block that follows it — on the same line or on the
//! next one, as keepalived reads `{` on a line of its own.

use super::{
    lexer::{Pos, Tok, Word},
    Item, Kind,
};

/// Blocks nested deeper than this are skipped (keepalived has at most 5).
pub const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The keyword; `{` for a block that follows no keyword.
    pub key: Word,
    pub args: Vec<Word>,
    pub block: Option<Vec<Node>>,
}

impl Node {
    pub fn pos(&self) -> Pos {
        self.key.pos
    }

    pub fn name(&self) -> &str {
        &self.key.text
    }

    /// The argument texts joined by spaces.
    pub fn args_text(&self) -> String {
        join(&self.args)
    }

    pub fn children(&self) -> &[Node] {
        self.block.as_deref().unwrap_or(&[])
    }
}

/// Words as they were written, quotes included.
pub fn join(words: &[Word]) -> String {
    words
        .iter()
        .map(|w| {
            if w.quoted {
                format!("\"{}\"", w.text)
            } else {
                w.text.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

struct Level {
    nodes: Vec<Node>,
    /// The statement that owns this block (None at the top).
    owner: Option<(Word, Vec<Word>)>,
}

struct Builder<'a> {
    levels: Vec<Level>,
    words: Vec<Word>,
    /// A statement ended by a line end, which a `{` on a later line may
    /// still open.
    pending: Option<(Word, Vec<Word>)>,
    /// Depth of skipped blocks beyond [`MAX_DEPTH`].
    skipping: usize,
    report: &'a mut Vec<Item>,
}

/// Builds the statement tree. Unbalanced braces are reported, never fatal.
pub fn build(toks: &[Tok], report: &mut Vec<Item>) -> Vec<Node> {
    let mut b = Builder {
        levels: vec![Level {
            nodes: vec![],
            owner: None,
        }],
        words: vec![],
        pending: None,
        skipping: 0,
        report,
    };
    for t in toks {
        if b.skipping > 0 {
            match t {
                Tok::Open(_) => b.skipping += 1,
                Tok::Close(_) => b.skipping -= 1,
                _ => {}
            }
            continue;
        }
        match t {
            Tok::Word(w) => {
                b.flush_pending();
                b.words.push(w.clone());
            }
            Tok::End => {
                if let Some(s) = b.statement() {
                    b.flush_pending();
                    b.pending = Some(s);
                }
            }
            Tok::Open(p) => {
                let owner = match b.statement() {
                    Some(s) => {
                        b.flush_pending();
                        s
                    }
                    None => b.pending.take().unwrap_or_else(|| {
                        let key = Word {
                            text: "{".into(),
                            quoted: false,
                            pos: *p,
                        };
                        (key, vec![])
                    }),
                };
                if b.levels.len() > MAX_DEPTH {
                    b.report.push(Item::new(
                        Some(*p),
                        Kind::Dropped,
                        format!("blocks nested deeper than {MAX_DEPTH} levels: skipped"),
                    ));
                    b.skipping = 1;
                    continue;
                }
                b.levels.push(Level {
                    nodes: vec![],
                    owner: Some(owner),
                });
            }
            Tok::Close(p) => {
                if let Some(s) = b.statement() {
                    b.flush_pending();
                    b.add(s);
                }
                b.flush_pending();
                if b.levels.len() == 1 {
                    b.report.push(Item::new(
                        Some(*p),
                        Kind::Dropped,
                        "`}` closes no block: ignored".into(),
                    ));
                    continue;
                }
                b.close();
            }
        }
    }
    if let Some(s) = b.statement() {
        b.flush_pending();
        b.add(s);
    }
    b.flush_pending();
    while b.levels.len() > 1 {
        if let Some((key, _)) = &b.levels[b.levels.len() - 1].owner {
            let msg = format!(
                "the block of `{}` is not closed: it ends at the end of the file",
                key.text
            );
            b.report.push(Item::new(Some(key.pos), Kind::Note, msg));
        }
        b.close();
    }
    b.levels.pop().map(|l| l.nodes).unwrap_or_default()
}

impl Builder<'_> {
    /// The words gathered so far as a statement, without a pasted line
    /// number in front.
    fn statement(&mut self) -> Option<(Word, Vec<Word>)> {
        if self.words.is_empty() {
            return None;
        }
        let mut words = std::mem::take(&mut self.words);
        if words.len() >= 2 && is_line_number(&words[0]) {
            let n = words.remove(0);
            let msg = format!(
                "`{}` in front of `{}` looks like a line number pasted from a listing: \
                 read as `{}` (keepalived would reject the line as unknown keyword `{}`)",
                n.text,
                words[0].text,
                join(&words),
                n.text
            );
            self.report.push(Item::new(Some(n.pos), Kind::Dropped, msg));
        }
        let mut it = words.into_iter();
        let key = it.next()?;
        Some((key, it.collect()))
    }

    fn flush_pending(&mut self) {
        if let Some(s) = self.pending.take() {
            self.add(s);
        }
    }

    /// Adds a statement without a block.
    fn add(&mut self, (key, args): (Word, Vec<Word>)) {
        if args.is_empty() && is_line_number(&key) {
            self.report.push(Item::new(
                Some(key.pos),
                Kind::Dropped,
                format!(
                    "a lone `{}` (a line number pasted from a listing?): ignored",
                    key.text
                ),
            ));
            return;
        }
        self.top().nodes.push(Node {
            key,
            args,
            block: None,
        });
    }

    fn close(&mut self) {
        let Some(level) = self.levels.pop() else {
            return;
        };
        let (key, args) = level.owner.unwrap_or_default_owner();
        self.top().nodes.push(Node {
            key,
            args,
            block: Some(level.nodes),
        });
    }

    fn top(&mut self) -> &mut Level {
        if self.levels.is_empty() {
            self.levels.push(Level {
                nodes: vec![],
                owner: None,
            });
        }
        let n = self.levels.len() - 1;
        &mut self.levels[n]
    }
}

trait OwnerExt {
    fn unwrap_or_default_owner(self) -> (Word, Vec<Word>);
}

impl OwnerExt for Option<(Word, Vec<Word>)> {
    fn unwrap_or_default_owner(self) -> (Word, Vec<Word>) {
        self.unwrap_or_else(|| {
            (
                Word {
                    text: "{".into(),
                    quoted: false,
                    pos: Pos::default(),
                },
                vec![],
            )
        })
    }
}

/// An unquoted run of 1-5 digits.
fn is_line_number(w: &Word) -> bool {
    !w.quoted && (1..=5).contains(&w.text.len()) && w.text.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{super::lexer, *};

    fn tree(text: &str) -> (String, Vec<String>) {
        let mut fs = lexer::MemFiles::new();
        fs.add("k.conf", text);
        let mut report = vec![];
        let l = lexer::lex(Path::new("k.conf"), &fs, &mut report).unwrap();
        let nodes = build(&l.toks, &mut report);
        fn show(n: &[Node]) -> String {
            n.iter()
                .map(|n| {
                    let mut s = n.name().to_string();
                    for a in &n.args {
                        s.push(' ');
                        s.push_str(&a.text);
                    }
                    if let Some(b) = &n.block {
                        s.push_str(&format!(" {{{}}}", show(b)));
                    }
                    s
                })
                .collect::<Vec<_>>()
                .join("; ")
        }
        let r = report
            .iter()
            .map(|i| format!("{}:{}", i.pos.map_or(0, |p| p.line), i.kind.word()))
            .collect();
        (show(&nodes), r)
    }

    #[test]
    fn blocks_on_one_line_and_on_their_own_lines() {
        assert_eq!(
            tree("vrrp_instance VI_1\n{\n  state MASTER\n  virtual_ipaddress { 10.0.0.1/24 dev eth0 }\n}\n").0,
            "vrrp_instance VI_1 {state MASTER; virtual_ipaddress {10.0.0.1/24 dev eth0}}"
        );
        assert_eq!(tree("a {\n b\n\n {\n c }\n}").0, "a {b {c}}");
        assert_eq!(tree("a {}}{ b").0, "a {}; { {b}");
    }

    #[test]
    fn unbalanced_braces_are_reported() {
        let (t, r) = tree("}\na {\n b {\n");
        assert_eq!(t, "a {b {}}");
        assert_eq!(r, ["1:dropped", "3:note", "2:note"]);
    }

    #[test]
    fn pasted_line_numbers() {
        let (t, r) =
            tree("a {\n12  virtual_router_id 51\n13\n14 }\nvirtual_ipaddress {\n 1 10.0.0.1\n}");
        assert_eq!(t, "a {virtual_router_id 51}; virtual_ipaddress {10.0.0.1}");
        assert_eq!(r, ["2:dropped", "3:dropped", "4:dropped", "6:dropped"]);
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let text = "{".repeat(100_000);
        let (_, r) = tree(&text);
        assert!(r.contains(&"1:dropped".to_string()));
        let text = "a {".repeat(50) + &"}".repeat(50);
        let (t, _) = tree(&text);
        assert_eq!(t.matches('{').count(), MAX_DEPTH);
    }
}
