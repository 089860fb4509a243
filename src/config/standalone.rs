//! The standalone resource file: APISIX's `apisix.yaml` with top-level arrays of resources,
//! `${{ENV}}` substitution, and the `#END` line that tells a whole file from one cut while it
//! was written.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::model::parse_items;
use crate::model::{Invalid, Kind};
use crate::tables::ConfigSet;

/// A file read in full: the valid resources and the items rejected one by one.
#[derive(Debug, Default)]
pub struct Loaded {
    pub config: ConfigSet,
    pub rejected: Vec<Invalid>,
}

/// Replaces `${{NAME}}` and `${{NAME:=default}}` with environment values (comment lines are
/// left alone).
pub fn substitute_env(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
        } else {
            substitute_line(line, &mut out)?;
        }
    }
    Ok(out)
}

fn substitute_line(line: &str, out: &mut String) -> Result<(), String> {
    let mut rest = line;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 3..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("unclosed ${{{{ in {:?}", line.trim()))?;
        let expr = after[..end].trim();
        let (name, default) = match expr.split_once(":=") {
            Some((n, d)) => (n.trim(), Some(d.trim())),
            None => (expr, None),
        };
        match (std::env::var(name), default) {
            (Ok(v), _) => out.push_str(&v),
            (Err(_), Some(d)) => out.push_str(d),
            (Err(_), None) => {
                return Err(format!(
                    "environment variable {name} is not set (used as ${{{{{name}}}}})"
                ))
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(())
}

/// The largest file read (a link to `/dev/zero` must not fill the memory).
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// How deeply `[`/`{` may nest; checked before parsing, which would otherwise take seconds
/// to refuse a file of brackets.
const MAX_NESTING: usize = 64;

/// Reads the file if it is a regular file (not a FIFO or a device, which could block or never
/// end) of at most [`MAX_FILE_BYTES`].
pub fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "{} is {} bytes, more than the {MAX_FILE_BYTES} allowed",
            path.display(),
            meta.len()
        ));
    }
    // Opened without blocking (a FIFO swapped in after the check must not hang the reader),
    // and checked again on what was opened.
    use std::os::unix::fs::OpenOptionsExt;
    const O_NONBLOCK: i32 = 0o4000;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Err(format!("{} is not a regular file", path.display()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "{} grew past {MAX_FILE_BYTES} bytes",
            path.display()
        ));
    }
    Ok(bytes)
}

/// Whether the text ends with APISIX's `#END` line (blank lines after it are fine).
fn has_end_mark(text: &str) -> bool {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .is_some_and(|l| l.trim() == "#END")
}

/// The deepest nesting of flow collections (`[`, `{`) outside quotes.
fn nesting(text: &str) -> usize {
    let (mut depth, mut max, mut quote) = (0usize, 0usize, None);
    for c in text.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '[' | '{') => {
                depth += 1;
                max = max.max(depth);
            }
            (None, ']' | '}') => depth = depth.saturating_sub(1),
            (None, '\n') => {}
            _ => {}
        }
    }
    max
}

/// Parses the file's text. A file without its `#END` line (as APISIX requires: it may be cut),
/// nested too deeply, not valid YAML, or not a mapping of arrays, is an error as a whole; an
/// invalid resource is rejected alone.
pub fn parse(text: &str) -> Result<Loaded, String> {
    if !has_end_mark(text) {
        return Err(
            "the file does not end with the #END line; it may have been cut while it was written"
                .into(),
        );
    }
    if nesting(text) > MAX_NESTING {
        return Err(format!("brackets nest more than {MAX_NESTING} deep"));
    }
    let text = substitute_env(text)?;
    let doc: Value = serde_yaml::from_str(&text).map_err(|e| format!("not valid YAML: {e}"))?;
    let map = match doc {
        Value::Object(map) => map,
        Value::Null => serde_json::Map::new(),
        _ => return Err("the top level must be a mapping (routes:, upstreams:, …)".into()),
    };
    let mut loaded = Loaded::default();
    let mut seq = 0u64;
    // Upstreams and services first is not needed (references resolve per request), but a
    // stable order keeps insertion order = file order within each kind.
    for (key, value) in &map {
        let Some(kind) = Kind::from_dir(key) else {
            log::warn!("standalone file: ignoring {key:?}, which Portico does not serve");
            continue;
        };
        let items = match value {
            Value::Array(items) => items,
            Value::Null => continue,
            _ => return Err(format!("{key}: must be an array")),
        };
        let mut seen = std::collections::HashSet::new();
        let mut unique = Vec::with_capacity(items.len());
        let mut credentials = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let id = item
                .get("id")
                .or_else(|| item.get("username"))
                .map(|v| v.to_string().trim_matches('"').to_string());
            if let Some(id) = &id {
                if !seen.insert(id.clone()) {
                    let invalid = Invalid {
                        kind,
                        id: id.clone(),
                        message: format!("duplicate id (item {i} of {key})"),
                    };
                    log::error!("{invalid}");
                    loaded.rejected.push(invalid);
                    continue;
                }
            }
            // As in APISIX's standalone file, a consumer item whose id is
            // `<username>/credentials/<id>` is a credential of that consumer.
            let credential = (kind == Kind::Consumer)
                .then(|| id.as_deref().and_then(|i| i.split_once("/credentials/")))
                .flatten()
                .map(|(user, cred)| format!("{user}/{cred}"));
            match credential {
                Some(c) => credentials.push((Some(c), item)),
                None => unique.push((None, item)),
            }
        }
        let parsed = parse_items(kind, unique).into_iter().chain(parse_items(
            Kind::Credential,
            std::mem::take(&mut credentials),
        ));
        for item in parsed {
            match item {
                Ok(resource) => {
                    seq += 1;
                    loaded.config.insert(seq, resource);
                }
                Err(invalid) => loaded.rejected.push(invalid),
            }
        }
    }
    Ok(loaded)
}

pub fn load(path: &Path) -> Result<Loaded, String> {
    let bytes = read_file(path)?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| format!("{}: not UTF-8 text: {e}", path.display()))?;
    parse(text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Re-reads the file when its content changes; a bad file keeps the last good config.
pub struct Watcher {
    path: PathBuf,
    last: Option<Vec<u8>>,
    pub interval: Duration,
}

impl Watcher {
    pub fn new(path: PathBuf, current: Option<Vec<u8>>) -> Watcher {
        Watcher {
            path,
            last: current,
            interval: Duration::from_millis(500),
        }
    }

    /// The file's new content if it changed since the last call; an error when it cannot be
    /// read (deleted, replaced by something that is not a file, too big).
    pub fn changed(&mut self) -> Result<Option<Vec<u8>>, String> {
        let bytes = read_file(&self.path)?;
        if self.last.as_deref() == Some(&bytes[..]) {
            return Ok(None);
        }
        self.last = Some(bytes.clone());
        Ok(Some(bytes))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_substitution() {
        std::env::set_var("PORTICO_TEST_PORT", "8080");
        assert_eq!(
            substitute_env("a: ${{PORTICO_TEST_PORT}} b: ${{ NOPE_X := 7 }}").unwrap(),
            "a: 8080 b: 7"
        );
        assert!(substitute_env("${{PORTICO_SURELY_UNSET}}")
            .unwrap_err()
            .contains("PORTICO_SURELY_UNSET"));
        assert!(substitute_env("${{open").is_err());
        assert_eq!(
            substitute_env("# ${{UNSET_IN_COMMENT}}\nx").unwrap(),
            "# ${{UNSET_IN_COMMENT}}\nx"
        );
    }

    #[test]
    fn cut_and_hostile_files_are_refused_whole() {
        assert!(parse("routes: []\n").unwrap_err().contains("#END"));
        assert!(parse("").unwrap_err().contains("#END"));
        assert!(parse("routes: []\n#END\n\n").is_ok());
        let deep = format!(
            "routes: {}{}\n#END\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(parse(&deep).unwrap_err().contains("nest"));
        assert!(parse("routes: [{uri: \"[[[[\"}]\n#END\n").is_ok());
    }

    #[test]
    fn bad_items_are_rejected_alone() {
        let text = r#"
routes:
  - id: 1
    uri: /a
    upstream_id: 1
  - id: 2
    uri: /b
    methods: [FETCH]
  - id: 1
    uri: /dup
upstreams:
  - id: 1
    nodes:
      "127.0.0.1:1980": 1
stream_routes: []
#END
"#;
        let loaded = parse(text).unwrap();
        assert_eq!(loaded.config.routes.len(), 1);
        assert_eq!(loaded.config.upstreams.len(), 1);
        assert_eq!(loaded.rejected.len(), 2);
        assert!(loaded
            .rejected
            .iter()
            .any(|r| r.message.contains("methods")));
        assert!(loaded
            .rejected
            .iter()
            .any(|r| r.message.contains("duplicate")));
        assert!(parse("routes: [\n#END").is_err());
        assert!(parse("- a\n#END").is_err());
        assert!(parse("routes: 1\n#END").is_err());
        assert!(parse("#END\n").unwrap().config.routes.is_empty());
    }
}
