//! `xlb import-keepalived`: a keepalived.conf becomes our YAML, commented
//! where a value was defaulted or translated, with a report of what could not
//! be carried over.
//!
//! - [`lexer`]: keepalived's lexical rules, `include` files;
//! - [`tree`]: statements and their blocks;
//! - [`translate`]: statements → [`crate::config::Config`], comments and
//!   report items.

pub mod lexer;
pub mod translate;
pub mod tree;

use std::net::Ipv4Addr;

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
