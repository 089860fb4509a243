//! The standalone resource file: APISIX's `apisix.yaml` with top-level arrays of resources,
//! `${{ENV}}` substitution and an optional `#END` line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::model::{Invalid, Kind};
use crate::tables::{load_items, ConfigSet};

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

/// Parses the file's text. A file that is not valid YAML, or not a mapping of arrays, is an
/// error as a whole; an invalid resource is rejected alone.
pub fn parse(text: &str) -> Result<Loaded, String> {
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
        load_items(
            kind,
            unique,
            &mut loaded.config,
            &mut loaded.rejected,
            &mut seq,
        );
        load_items(
            Kind::Credential,
            std::mem::take(&mut credentials),
            &mut loaded.config,
            &mut loaded.rejected,
            &mut seq,
        );
    }
    Ok(loaded)
}

pub fn load(path: &Path) -> Result<Loaded, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
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

    /// The file's new content, if it changed since the last call.
    pub fn changed(&mut self) -> Option<Vec<u8>> {
        let bytes = std::fs::read(&self.path).ok()?;
        if self.last.as_deref() == Some(&bytes[..]) {
            return None;
        }
        self.last = Some(bytes.clone());
        Some(bytes)
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
        assert!(parse("routes: [").is_err());
        assert!(parse("- a").is_err());
        assert!(parse("routes: 1").is_err());
        assert!(parse("").unwrap().config.routes.is_empty());
    }
}
