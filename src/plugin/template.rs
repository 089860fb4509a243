//! Strings with APISIX variables (`$uri`, `${arg_name}`, `${http_x ?? default}`), parsed once
//! when the plugin loads and rendered per request.

use super::Cx;

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Var { name: String, default: String },
}

/// A parsed template; plain text costs nothing to render.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

fn is_name(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.'
}

impl Template {
    /// `$name` (`[A-Za-z0-9_.]+`), `${name}`, `${name ?? default}`; `\$` and a lone `$` stay.
    pub fn parse(text: &str) -> Template {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(i) = rest.find('$') {
            let (before, after) = rest.split_at(i);
            let after = &after[1..];
            if before.ends_with('\\') {
                lit.push_str(before);
                lit.push('$');
                rest = after;
                continue;
            }
            lit.push_str(before);
            if let Some(body) = after.strip_prefix('{') {
                if let Some(end) = body.find('}') {
                    let inner = &body[..end];
                    let (name, default) = match inner.split_once("??") {
                        Some((n, d)) => (n.trim(), d.trim()),
                        None => (inner.trim(), ""),
                    };
                    flush(&mut parts, &mut lit);
                    parts.push(Part::Var {
                        name: name.to_string(),
                        default: default.to_string(),
                    });
                    rest = &body[end + 1..];
                    continue;
                }
            }
            let end = after.find(|c: char| !is_name(c)).unwrap_or(after.len());
            if end == 0 {
                lit.push('$');
                rest = after;
                continue;
            }
            flush(&mut parts, &mut lit);
            parts.push(Part::Var {
                name: after[..end].to_string(),
                default: String::new(),
            });
            rest = &after[end..];
        }
        lit.push_str(rest);
        flush(&mut parts, &mut lit);
        Template { parts }
    }

    /// Whether the template has any variable.
    pub fn is_plain(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text(_)))
    }

    /// The text with each variable's value (missing: its default, or "").
    pub fn render(&self, cx: &Cx<'_>) -> String {
        self.render_with(|name| cx.var(name))
    }

    /// Writes the text into `out`, each variable by `var` (which writes its value, or its
    /// stand-in, itself: the access log escapes values and writes `-` for a missing one).
    pub fn render_each(&self, out: &mut String, mut var: impl FnMut(&str, &mut String)) {
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Var { name, .. } => var(name, out),
            }
        }
    }

    /// Like [`Template::render`] with variables from `lookup`.
    pub fn render_with(&self, lookup: impl Fn(&str) -> Option<String>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Var { name, default } => match lookup(name) {
                    Some(v) => out.push_str(&v),
                    None => out.push_str(default),
                },
            }
        }
        out
    }
}

fn flush(parts: &mut Vec<Part>, lit: &mut String) {
    if !lit.is_empty() {
        parts.push(Part::Text(std::mem::take(lit)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(t: &str) -> String {
        Template::parse(t).render_with(|n| match n {
            "uri" => Some("/hello".into()),
            "arg_name" => Some("json".into()),
            _ => None,
        })
    }

    #[test]
    fn apisix_forms() {
        assert_eq!(render("$uri/test/add"), "/hello/test/add");
        assert_eq!(render("$uri/test/a${arg_name}c"), "/hello/test/ajsonc");
        assert_eq!(render("/foo$$uri"), "/foo$/hello");
        assert_eq!(render("\\$uri/foo$uri"), "\\$uri/foo/hello");
        assert_eq!(render("$uri/$bad_var/bar"), "/hello//bar");
        assert_eq!(render("${nope ?? dflt}!"), "dflt!");
        assert_eq!(render("{\"count\": $arg_name}"), "{\"count\": json}");
        assert!(Template::parse("plain").is_plain());
    }
}
