//! Prometheus' text exposition format (version 0.0.4): the only part of a Prometheus library
//! the exporter needs, since the counting is done by [`super::series`].

use std::fmt::Write as _;

/// Writes metric families into one text body.
pub struct Text {
    out: String,
    prefix: String,
}

impl Text {
    pub fn with_capacity(prefix: &str, bytes: usize) -> Text {
        Text {
            out: String::with_capacity(bytes),
            prefix: prefix.to_string(),
        }
    }

    /// `# HELP` and `# TYPE` of a family.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {}{name} {help}", self.prefix);
        let _ = writeln!(self.out, "# TYPE {}{name} {kind}", self.prefix);
    }

    /// One sample: `name{labels} value`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(&self.prefix);
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_into(&mut self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        write_value(&mut self.out, value);
        self.out.push('\n');
    }

    /// A sample whose label text is already written (`k="v",…`, escaped): the hot path of
    /// a scrape, where thousands of series share their label text across samples.
    pub fn sample_raw(&mut self, name: &str, labels: &[&str], value: f64) {
        self.out.push_str(&self.prefix);
        self.out.push_str(name);
        self.out.push('{');
        for (i, l) in labels.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.out.push_str(l);
        }
        self.out.push_str("} ");
        write_value(&mut self.out, value);
        self.out.push('\n');
    }

    pub fn len(&self) -> usize {
        self.out.len()
    }

    /// What was written so far; the text starts again empty, with the same capacity.
    pub fn take(&mut self) -> String {
        let capacity = self.out.capacity();
        std::mem::replace(&mut self.out, String::with_capacity(capacity))
    }
}

/// `k="v"` with `v` escaped, for [`Text::sample_raw`].
pub fn label(out: &mut String, k: &str, v: &str) {
    out.push_str(k);
    out.push_str("=\"");
    escape_into(out, v);
    out.push('"');
}

/// A label value with `\`, `"` and newlines escaped, as the format asks.
fn escape_into(out: &mut String, v: &str) {
    if !v.contains(['\\', '"', '\n']) {
        out.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Integers without a fraction; `+Inf`, `-Inf`, `NaN` spelled as the format spells them.
fn write_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        // itoa and zmij (serde_json's formatters): core::fmt was most of a scrape's time.
        out.push_str(itoa::Buffer::new().format(v as i64));
    } else {
        out.push_str(zmij::Buffer::new().format_finite(v));
    }
}

/// A bucket bound as a label (`le="5"`, `le="+Inf"`).
pub fn bound(le: f64) -> String {
    let mut s = String::new();
    write_value(&mut s, le);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_escaped_and_numbers_plain() {
        let mut t = Text::with_capacity("apisix_", 0);
        t.family("x", "counter", "An x");
        t.sample("x", &[("a", "q\"\\\nz"), ("b", "")], 3.0);
        t.sample("y", &[], 0.25);
        t.sample("z", &[], f64::INFINITY);
        assert_eq!(
            t.take(),
            "# HELP apisix_x An x\n# TYPE apisix_x counter\n\
             apisix_x{a=\"q\\\"\\\\\\nz\",b=\"\"} 3\napisix_y 0.25\napisix_z +Inf\n"
        );
        assert_eq!(bound(60000.0), "60000");
    }
}
