//! A large main file parsed in pieces: the items of its top-level
//! `virtual_servers` list are cut out as text, so a [`super::Loader`] parses
//! only the items whose text changed since the last reload.
//!
//! Cutting works on the plain block layout that people and generators
//! write. Anything else (a flow list, several documents) is not cut, and a
//! piece that does not parse on its own makes the loader parse the whole
//! file instead, so what is accepted and every error message are those of a
//! whole-file parse.

/// One `virtual_servers` item: its text, from its `-` line to the line
/// before the next item.
#[derive(Debug, PartialEq, Eq)]
pub struct Piece<'a> {
    pub text: &'a str,
}

/// The main file cut in two: `head` is the text with the key's line as
/// `virtual_servers: []` and the items' lines emptied (so every other key
/// keeps its line), and the items.
#[derive(Debug, PartialEq, Eq)]
pub struct Split<'a> {
    pub head: String,
    pub pieces: Vec<Piece<'a>>,
    /// 1-based line of the `virtual_servers:` key.
    pub key_line: usize,
}

const KEY: &str = "virtual_servers:";

/// A line without its line end.
fn body(l: &str) -> &str {
    l.trim_end_matches(['\n', '\r'])
}

/// Cuts `text`, or `None` when it is not in the block layout.
pub fn split(text: &str) -> Option<Split<'_>> {
    // (start offset, line) of every line, newline included.
    let lines: Vec<(usize, &str)> = text
        .split_inclusive('\n')
        .scan(0, |at, l| {
            let start = *at;
            *at += l.len();
            Some((start, l))
        })
        .collect();
    // YAML breaks lines at these too; the cut only knows `\n` and `\r\n`.
    let other_breaks = text.contains(['\u{85}', '\u{2028}', '\u{2029}'])
        || lines.iter().any(|(_, l)| body(l).contains('\r'));
    if other_breaks
        || lines
            .iter()
            .any(|(_, l)| body(l) == "---" || l.starts_with("--- ") || body(l) == "...")
    {
        return None;
    }
    let mut keys = lines.iter().enumerate().filter(|(_, (_, l))| {
        let rest = body(l).strip_prefix(KEY);
        // The key alone, or followed by a comment.
        rest.is_some_and(|r| {
            r.trim_end().is_empty() || (r.starts_with(' ') && r.trim_start().starts_with('#'))
        })
    });
    let (k, _) = keys.next()?;
    if keys.next().is_some() {
        return None;
    }
    let indent = |l: &str| l.len() - l.trim_start_matches(' ').len();
    let blank = |l: &str| {
        let t = body(l).trim_start();
        t.is_empty() || t.starts_with('#')
    };
    let item = |l: &str, n: usize| {
        indent(l) == n && {
            let rest = body(&l[n..]);
            rest == "-" || rest.starts_with("- ")
        }
    };
    let first = (k + 1..lines.len()).find(|&i| !blank(lines[i].1))?;
    let n = indent(lines[first].1);
    if !item(lines[first].1, n) {
        return None;
    }
    // Item starts, then the end of the list.
    let mut starts = Vec::new();
    let mut end = lines.len();
    for (i, (_, l)) in lines.iter().enumerate().skip(first) {
        if blank(l) {
            continue;
        }
        if item(l, n) {
            starts.push(i);
        } else if indent(l) <= n {
            end = i;
            break;
        }
    }
    let offset = |i: usize| lines.get(i).map_or(text.len(), |(o, _)| *o);
    let pieces = starts
        .iter()
        .enumerate()
        .map(|(j, &s)| {
            let e = starts.get(j + 1).copied().unwrap_or(end);
            Piece {
                text: &text[offset(s)..offset(e)],
            }
        })
        .collect();
    let mut head = String::with_capacity(offset(first) + (text.len() - offset(end)) + end);
    for (i, (_, l)) in lines.iter().enumerate() {
        if i == k {
            head.push_str("virtual_servers: []\n");
        } else if (first..end).contains(&i) {
            head.push('\n');
        } else {
            head.push_str(l);
        }
    }
    Some(Split {
        head,
        pieces,
        key_line: k + 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_block_items_and_keeps_lines() {
        let text = "global: {interface: eth0}\nvirtual_servers:\n  # web\n  - name: a\n    port: 80\n\n  - name: b\n    real_servers:\n      - {address: 10.0.0.1}\ninclude: [x]\n";
        let s = split(text).unwrap();
        assert_eq!(
            s.pieces,
            [
                Piece {
                    text: "  - name: a\n    port: 80\n\n"
                },
                Piece {
                    text: "  - name: b\n    real_servers:\n      - {address: 10.0.0.1}\n"
                }
            ]
        );
        assert_eq!(
            s.head,
            "global: {interface: eth0}\nvirtual_servers: []\n  # web\n\n\n\n\n\n\ninclude: [x]\n"
        );
        assert_eq!(s.head.lines().count(), text.lines().count());
    }

    #[test]
    fn the_key_may_carry_a_comment() {
        let s = split("virtual_servers:   # the pool\n  - name: a\n").unwrap();
        assert_eq!(s.pieces.len(), 1);
        assert_eq!(s.head, "virtual_servers: []\n\n");
        assert_eq!(split("virtual_servers:#x\n  - name: a\n"), None);
    }

    #[test]
    fn items_at_column_zero_and_no_final_newline() {
        let s = split("virtual_servers:\n- name: a\n- name: b").unwrap();
        assert_eq!(s.pieces.len(), 2);
        assert_eq!(s.pieces[1].text, "- name: b");
        assert_eq!(s.head, "virtual_servers: []\n\n\n");
    }

    #[test]
    fn other_layouts_are_not_cut() {
        for text in [
            "virtual_servers: # pool\r  - name: a\n  - name: b\n",
            "virtual_servers:\n  - name: a\u{2028}  - name: b\n",
            "global: {}\n",
            "virtual_servers: [{name: a}]\n",
            "virtual_servers:\n  [{name: a}]\n",
            "virtual_servers:\n",
            "---\nvirtual_servers:\n  - name: a\n",
            "virtual_servers:\n  - name: a\nvirtual_servers:\n  - name: b\n",
        ] {
            assert_eq!(split(text), None, "{text:?}");
        }
    }
}
