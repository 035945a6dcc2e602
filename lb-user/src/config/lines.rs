//! Where each key of a YAML document sits, so errors found after parsing can
//! still name a line. Paths use the same form as `serde_path_to_error`:
//! `virtual_servers[1].real_servers[0].port`.

use std::collections::HashMap;

use yaml_rust2::{
    parser::{Event, MarkedEventReceiver, Parser},
    scanner::Marker,
};

/// Path → 1-based line of the key (or sequence item) that starts it.
#[derive(Debug, Default)]
pub struct LineIndex {
    lines: HashMap<String, usize>,
}

impl LineIndex {
    /// Indexes `text`, or returns its first syntax error as
    /// (line, column, message).
    pub fn new(text: &str) -> Result<Self, (usize, usize, String)> {
        let mut b = Builder::default();
        let mut parser = Parser::new_from_str(text);
        parser.load(&mut b, false).map_err(|e| {
            (
                e.marker().line(),
                e.marker().col() + 1,
                e.info().to_string(),
            )
        })?;
        Ok(LineIndex { lines: b.lines })
    }

    /// The line of `path`, or of its nearest indexed ancestor.
    pub fn line(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(&l) = self.lines.get(p) {
                return Some(l);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

enum Frame {
    /// A mapping: the next scalar is a key when `key` is None.
    Map { prefix: String, key: Option<String> },
    /// A sequence and the index of its next item.
    Seq { prefix: String, next: usize },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    lines: HashMap<String, usize>,
}

impl Builder {
    /// The path of the value about to start, recording its line; consumes the
    /// pending key of a mapping.
    fn enter_value(&mut self, line: usize) -> String {
        match self.stack.last_mut() {
            None => String::new(),
            Some(Frame::Map { prefix, key }) => {
                let k = key.take().unwrap_or_default();
                if prefix.is_empty() {
                    k
                } else {
                    format!("{prefix}.{k}")
                }
            }
            Some(Frame::Seq { prefix, next }) => {
                let p = format!("{prefix}[{next}]");
                *next += 1;
                self.lines.entry(p.clone()).or_insert(line);
                p
            }
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let line = mark.line();
        match ev {
            Event::Scalar(value, ..) => {
                if let Some(Frame::Map { prefix, key }) = self.stack.last_mut() {
                    if key.is_none() {
                        let path = if prefix.is_empty() {
                            value.clone()
                        } else {
                            format!("{prefix}.{value}")
                        };
                        self.lines.entry(path).or_insert(line);
                        *key = Some(value);
                        return;
                    }
                }
                self.enter_value(line);
            }
            Event::Alias(_) => {
                self.enter_value(line);
            }
            Event::MappingStart(..) => {
                let prefix = self.enter_value(line);
                self.stack.push(Frame::Map { prefix, key: None });
            }
            Event::SequenceStart(..) => {
                let prefix = self.enter_value(line);
                self.stack.push(Frame::Seq { prefix, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_items_have_lines() {
        let text = "global:\n  interface: eth0\nvirtual_servers:\n  - name: a\n    real_servers:\n      - address: 10.0.0.1\n        port: 80\n  - name: b\n";
        let ix = LineIndex::new(text).unwrap();
        assert_eq!(ix.line("global.interface"), Some(2));
        assert_eq!(ix.line("virtual_servers[0]"), Some(4));
        assert_eq!(ix.line("virtual_servers[0].real_servers[0].port"), Some(7));
        assert_eq!(ix.line("virtual_servers[1].name"), Some(8));
        assert_eq!(
            ix.line("virtual_servers[1].port"),
            Some(8),
            "falls back to the item"
        );
        assert_eq!(ix.line("nothing"), None);
    }

    #[test]
    fn flow_style_and_broken_input() {
        let ix = LineIndex::new("a: {b: 1, c: [x, {d: 2}]}\n").unwrap();
        assert_eq!(ix.line("a.c[1].d"), Some(1));
        assert!(LineIndex::new("a: [\n").is_err());
    }
}
