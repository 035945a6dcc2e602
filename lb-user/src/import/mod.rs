//! `xlb import-keepalived`: a keepalived.conf becomes our YAML, commented
//! where a value was defaulted or translated, with a report of what could not
//! be carried over.
//!
//! - [`lexer`]: keepalived's lexical rules, `include` files;
//! - [`tree`]: statements and their blocks;
//! - `global`, `scripts`, `vrrp`, `lvs`, `checker`: one translator per
//!   section, writing report items (`report`) and comments ([`ann`]);
//! - [`resolve`]: the sections in order and resolved against each other
//!   (global defaults, the instance holding a VIP, tracked scripts) into a
//!   [`Config`];
//! - [`emit`]: the YAML text, written by hand so it can carry comments.

pub mod ann;
mod checker;
pub mod emit;
mod global;
pub mod lexer;
mod lvs;
mod report;
pub mod resolve;
mod scripts;
pub mod tree;
mod vrrp;

use std::{fmt, net::Ipv4Addr, path::Path};

use crate::config::{self, Config};
pub use lexer::{Disk, Files, MemFiles, Pos};

/// What a report line is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Carried over, with a change of meaning or a default worth knowing.
    Note,
    /// Not carried over.
    Dropped,
    /// Left as a placeholder that `xlb check` refuses until it is filled in.
    Todo,
}

impl Kind {
    pub fn word(self) -> &'static str {
        match self {
            Kind::Note => "note",
            Kind::Dropped => "dropped",
            Kind::Todo => "todo",
        }
    }
}

/// One report line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub pos: Option<Pos>,
    pub kind: Kind,
    pub msg: String,
}

impl Item {
    pub fn new(pos: Option<Pos>, kind: Kind, msg: String) -> Self {
        Item { pos, kind, msg }
    }
}

/// Command-line choices.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `global.interface`; else the first vrrp_instance's.
    pub interface: Option<String>,
    /// The SNAT pool of every virtual server; else the `unicast_src_ip` of
    /// the instance on that interface; else a placeholder.
    pub snat_addresses: Vec<Ipv4Addr>,
}

/// The result of an import.
#[derive(Debug, Clone)]
pub struct Import {
    pub config: Config,
    pub yaml: String,
    /// Report lines, in the order of the text: `file:line: kind: message`.
    pub report: Vec<String>,
    pub items: Vec<Item>,
}

impl Import {
    /// Something was dropped or left to fill in: the exit status is non-zero.
    pub fn lossy(&self) -> bool {
        self.items.iter().any(|i| i.kind != Kind::Note)
    }
}

/// An input that could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportError(pub String);

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ImportError {}

/// Imports `path` and the files it includes.
pub fn import(path: &Path, opts: &Options, fs: &dyn Files) -> Result<Import, ImportError> {
    let mut items = vec![];
    let lexed = lexer::lex(path, fs, &mut items)
        .map_err(|e| ImportError(format!("{}: {e}", path.display())))?;
    let nodes = tree::build(&lexed.toks, &mut items);
    let out = resolve::translate(&nodes, opts, &mut items);
    let source = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    let yaml = emit::emit(&out.config, &out.ann, &source);
    // What `xlb check` would still refuse, placeholders aside, is said too.
    if let Err(e) = config::parse(&yaml, "") {
        for err in e.errors {
            let rest = err.splitn(3, ':').nth(2).unwrap_or(&err).trim();
            let flagged = out.placeholders.iter().any(|p| {
                rest.strip_prefix(p.as_str())
                    .is_some_and(|r| r.starts_with(':'))
            });
            if !flagged {
                items.push(Item::new(
                    None,
                    Kind::Todo,
                    format!("xlb check refuses the result: {rest}"),
                ));
            }
        }
    }
    items.sort_by_key(|i| i.pos.map_or(u32::MAX, |p| p.seq));
    let report = items.iter().map(|i| render(i, &lexed.files)).collect();
    Ok(Import {
        config: out.config,
        yaml,
        report,
        items,
    })
}

fn render(i: &Item, files: &[String]) -> String {
    match i.pos {
        Some(p) => {
            let file = files.get(p.file as usize).map_or("?", String::as_str);
            format!("{file}:{}: {}: {}", p.line, i.kind.word(), i.msg)
        }
        None => {
            let file = files.first().map_or("?", String::as_str);
            format!("{file}: {}: {}", i.kind.word(), i.msg)
        }
    }
}
