//! `include`: virtual servers kept in files of their own, as keepalived's
//! `include /etc/keepalived/conf.d/*.conf` and nginx's `conf.d` do.
//!
//! Generated pools are usually one file per virtual server. A [`Loader`]
//! keeps what it parsed of each included file with the hash of its text, so
//! a reload parses only the files that changed: parsing YAML, not applying
//! it, is what a reload of a large pool costs.

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::Deserialize;

use super::{parse_yaml, split, Config, ConfigError, LineIndex, VirtualServer};
use crate::glob::{has_wildcard, NamePattern};

/// More files than this from one pattern is refused: a pattern that
/// matches a whole tree by mistake should not be read.
const MAX_FILES: usize = 4096;

/// An included file: virtual servers and nothing else.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Included {
    #[serde(default)]
    virtual_servers: Vec<Arc<VirtualServer>>,
}

/// What was parsed of one included file.
struct Cached {
    hash: u64,
    servers: Vec<Arc<VirtualServer>>,
}

/// A loaded configuration and the hash of every text it was read from.
pub struct Loaded {
    pub config: Config,
    /// Changes when the main file or any included file changes, or when
    /// the set of included files does.
    pub hash: u64,
    /// Included files parsed this time (the others came from the cache).
    pub parsed_files: usize,
    /// Virtual servers of the main file parsed this time (the others had
    /// the same text as before).
    pub parsed_servers: usize,
}

/// Which file each merged virtual server came from.
struct Origin<'a> {
    file: &'a Path,
    text: &'a str,
    /// Index of its first virtual server in the merged list.
    start: usize,
    count: usize,
}

/// Reads a config and its includes, reusing what it parsed before for
/// included files whose text has not changed.
#[derive(Default)]
pub struct Loader {
    cache: HashMap<PathBuf, Cached>,
    /// The main file's last hash and `include` patterns, to tell an
    /// unchanged set of files without parsing the main file again.
    main: Option<(u64, Vec<String>)>,
    /// The main file's virtual servers by the hash of their text.
    pieces: HashMap<u64, Arc<VirtualServer>>,
}

impl Loader {
    /// Reads, parses and validates `path` and the files it includes.
    pub fn load(&mut self, path: &Path) -> Result<Loaded, ConfigError> {
        let text = read(path)?;
        self.parse(&text, path)
    }

    /// Parses and validates `text`, read from `path` (includes are relative
    /// to its directory).
    pub fn parse(&mut self, text: &str, path: &Path) -> Result<Loaded, ConfigError> {
        Ok(self
            .parse_if_changed(text, path, None)?
            .expect("no hash to compare with"))
    }

    /// As [`Loader::load`], but `None` when the main file and every file it
    /// includes hash to `current` (nothing to do; nothing parsed).
    pub fn load_if_changed(
        &mut self,
        path: &Path,
        current: Option<u64>,
    ) -> Result<Option<Loaded>, ConfigError> {
        let text = read(path)?;
        self.parse_if_changed(&text, path, current)
    }

    fn parse_if_changed(
        &mut self,
        text: &str,
        path: &Path,
        current: Option<u64>,
    ) -> Result<Option<Loaded>, ConfigError> {
        let name = path.display().to_string();
        let main_hash = hash(text);
        let mut config: Option<Config> = None;
        let mut parsed_servers = 0;
        let patterns = match &self.main {
            Some((h, patterns)) if *h == main_hash => patterns.clone(),
            _ => {
                let c = self.parse_main(text, &name, &mut parsed_servers)?;
                let patterns = c.include.clone();
                self.main = Some((main_hash, patterns.clone()));
                config = Some(c);
                patterns
            }
        };
        // Every included file, read and hashed.
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut h = std::collections::hash_map::DefaultHasher::new();
        main_hash.hash(&mut h);
        let mut files: Vec<(PathBuf, String, u64)> = Vec::new();
        for (i, pattern) in patterns.iter().enumerate() {
            let found = expand(dir, pattern).map_err(|e| {
                let line = LineIndex::new(text)
                    .ok()
                    .and_then(|x| x.line(&format!("include[{i}]")))
                    .unwrap_or(1);
                one(format!("{name}:{line}: include[{i}]: {e}"))
            })?;
            for file in found {
                if file == path || files.iter().any(|f| f.0 == file) {
                    continue;
                }
                let body = read(&file)?;
                let fhash = hash(&body);
                file.hash(&mut h);
                fhash.hash(&mut h);
                files.push((file, body, fhash));
            }
        }
        let total = h.finish();
        if current == Some(total) {
            return Ok(None);
        }
        let mut config = match config {
            Some(c) => c,
            None => self.parse_main(text, &name, &mut parsed_servers)?,
        };
        // Only files not parsed before, or changed, are parsed. (On one
        // thread: parsing is mostly allocation, and the agent keeps one
        // malloc arena.)
        let mut parsed_files = 0;
        let mut origins = Vec::new();
        for (file, body, fhash) in files.iter() {
            if !matches!(self.cache.get(file), Some(c) if c.hash == *fhash) {
                parsed_files += 1;
                let inc: Included = parse_yaml(body, &file.display().to_string())?;
                self.cache.insert(
                    file.clone(),
                    Cached {
                        hash: *fhash,
                        servers: inc.virtual_servers,
                    },
                );
            }
            let servers = self.cache[file].servers.clone();
            origins.push(Origin {
                file,
                text: body,
                start: config.virtual_servers.len(),
                count: servers.len(),
            });
            config.virtual_servers.extend(servers);
        }
        // Files no longer included are forgotten.
        self.cache.retain(|f, _| files.iter().any(|x| &x.0 == f));
        let problems = super::validate::check(&config);
        if !problems.is_empty() {
            return Err(locate(text, &name, &origins, problems));
        }
        Ok(Some(Loaded {
            config,
            hash: total,
            parsed_files,
            parsed_servers,
        }))
    }

    /// The main file, its virtual servers taken from the last parse where
    /// their text is the same. Falls back to parsing the whole text, which
    /// then gives any error.
    fn parse_main(
        &mut self,
        text: &str,
        name: &str,
        parsed_count: &mut usize,
    ) -> Result<Config, ConfigError> {
        let whole = |pieces: &mut HashMap<_, _>, parsed: &mut usize| {
            pieces.clear();
            let c: Config = parse_yaml(text, name)?;
            *parsed = c.virtual_servers.len();
            Ok(c)
        };
        let Some(cut) = split::split(text) else {
            return whole(&mut self.pieces, parsed_count);
        };
        // The key must be the top-level one, not text inside a quoted string
        // or flow collection that spans its line.
        let top = LineIndex::new(&cut.head)
            .ok()
            .and_then(|i| i.line("virtual_servers"));
        if top != Some(cut.key_line) {
            return whole(&mut self.pieces, parsed_count);
        }
        let mut pieces = HashMap::with_capacity(cut.pieces.len());
        let mut servers = Vec::with_capacity(cut.pieces.len());
        let mut fresh = 0;
        for p in &cut.pieces {
            let h = hash(p.text);
            let vs = match self.pieces.get(&h).or_else(|| pieces.get(&h)) {
                Some(vs) => Arc::clone(vs),
                None => {
                    fresh += 1;
                    let one: Option<Vec<Arc<VirtualServer>>> = serde_yaml::from_str(p.text).ok();
                    match one.and_then(|v| <[_; 1]>::try_from(v).ok()) {
                        Some([vs]) => vs,
                        None => return whole(&mut self.pieces, parsed_count),
                    }
                }
            };
            pieces.insert(h, Arc::clone(&vs));
            servers.push(vs);
        }
        let Ok(mut c) = parse_yaml::<Config>(&cut.head, name) else {
            return whole(&mut self.pieces, parsed_count);
        };
        c.virtual_servers = servers;
        self.pieces = pieces;
        *parsed_count = fresh;
        Ok(c)
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| one(format!("{}: {e}", path.display())))
}

fn hash(text: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

fn one(msg: String) -> ConfigError {
    ConfigError { errors: vec![msg] }
}

/// The files `pattern` names, relative to `dir`, sorted. Wildcards (`*`,
/// `?`, `[...]`) may stand in the file name, not in directory names; a
/// pattern with wildcards may match nothing (an empty conf.d), a plain path
/// must exist.
fn expand(dir: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
    let full = dir.join(pattern);
    let name = full
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| format!("{pattern}: not a file name"))?;
    let parent = full.parent().unwrap_or(Path::new("/"));
    if has_wildcard(&parent.to_string_lossy()) {
        return Err(format!(
            "{pattern}: wildcards are allowed in the file name only"
        ));
    }
    if !has_wildcard(&name) {
        if !full.is_file() {
            return Err(format!("{}: no such file", full.display()));
        }
        return Ok(vec![full]);
    }
    let entries = std::fs::read_dir(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    let mut files = Vec::new();
    let matcher = NamePattern::new(&name);
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        // Hidden files (editor swap files, `.orig`) only when asked for.
        if n.starts_with('.') && !name.starts_with('.') {
            continue;
        }
        if matcher.matches(&n) && e.path().is_file() {
            files.push(e.path());
            if files.len() > MAX_FILES {
                return Err(format!("{pattern}: matches more than {MAX_FILES} files"));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Validation problems with the file and line each comes from: a problem
/// of an included virtual server names that file and its index there.
fn locate(
    text: &str,
    name: &str,
    origins: &[Origin],
    problems: Vec<(String, String)>,
) -> ConfigError {
    let mut indexes: HashMap<&Path, LineIndex> = HashMap::new();
    let main = LineIndex::new(text).unwrap_or_default();
    let errors = problems
        .into_iter()
        .map(|(path, msg)| {
            let at = path
                .strip_prefix("virtual_servers[")
                .and_then(|r| r.split_once(']'))
                .and_then(|(n, rest)| Some((n.parse::<usize>().ok()?, rest)));
            let origin = at.and_then(|(n, rest)| {
                let o = origins
                    .iter()
                    .find(|o| n >= o.start && n < o.start + o.count)?;
                Some((o, format!("virtual_servers[{}]{rest}", n - o.start)))
            });
            let msg = rename_refs(&msg, origins);
            match origin {
                Some((o, local)) => {
                    let index = indexes
                        .entry(o.file)
                        .or_insert_with(|| LineIndex::new(o.text).unwrap_or_default());
                    let line = index.line(&local).unwrap_or(1);
                    format!("{}:{line}: {local}: {msg}", o.file.display())
                }
                None => {
                    let line = main.line(&path).unwrap_or(1);
                    format!("{name}:{line}: {path}: {msg}")
                }
            }
        })
        .collect();
    ConfigError { errors }
}

/// `virtual_servers[N]` in a message, where N is an included server, as
/// that file's own index and name.
fn rename_refs(msg: &str, origins: &[Origin]) -> String {
    const REF: &str = "virtual_servers[";
    let Some(at) = msg.find(REF) else {
        return msg.to_string();
    };
    let rest = &msg[at + REF.len()..];
    let Some((n, tail)) = rest.split_once(']') else {
        return msg.to_string();
    };
    let Ok(n) = n.parse::<usize>() else {
        return msg.to_string();
    };
    match origins
        .iter()
        .find(|o| n >= o.start && n < o.start + o.count)
    {
        Some(o) => format!(
            "{}{REF}{}] of {}{tail}",
            &msg[..at],
            n - o.start,
            o.file.display()
        ),
        None => msg.to_string(),
    }
}
