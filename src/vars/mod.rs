//! APISIX route `vars` expressions, with lua-resty-expr semantics.
//!
//! A route's `vars` is compiled once, when the route is loaded, into a [`Vars`] tree: regexes
//! and CIDRs are built up front so that a bad route is rejected with a readable message instead
//! of failing on every request, and so that evaluation only compares strings.
//!
//! ```
//! use std::borrow::Cow;
//! use portico::vars::{VarLookup, Vars};
//!
//! struct Args;
//! impl VarLookup for Args {
//!     fn var(&self, name: &str) -> Option<Cow<'_, str>> {
//!         (name == "arg_age").then_some(Cow::Borrowed("21"))
//!     }
//! }
//!
//! let vars = Vars::parse(&serde_json::json!([
//!     ["arg_age", ">=", 18],
//!     ["OR", ["arg_name", "==", null], ["arg_name", "~~", "^[a-z]+$"]],
//! ]))
//! .unwrap();
//! assert!(vars.matches(&Args));
//! ```

pub mod request;

use std::borrow::Cow;
use std::net::IpAddr;

use crate::net::Cidr;

use regex::{Regex, RegexBuilder};
use serde_json::Value;

/// How deeply logical forms may nest; bounds the recursion of both parsing and evaluation.
const MAX_DEPTH: usize = 32;

/// Where an expression reads request variables from.
///
/// A trait rather than a map so that the proxy can compute variables lazily from the request
/// it already holds, borrowing where it can.
pub trait VarLookup {
    /// The value of an APISIX variable: `uri`, `host`, `remote_addr`, `request_method`,
    /// `scheme`, `server_port`, `http_<header name, lowercase, '-' as '_'>`, `cookie_<name>`,
    /// `arg_<name>`, `post_arg_<name>`, ... `None` when the variable is absent.
    fn var(&self, name: &str) -> Option<Cow<'_, str>>;
}

/// A compiled `vars` expression list.
///
/// Built once per route by [`Vars::parse`] and shared by every request that reaches the route.
#[derive(Debug, Clone)]
pub struct Vars {
    root: Node,
}

impl Vars {
    /// Compiles APISIX's JSON form. Errors are messages a user can act on, naming the bad part,
    /// e.g. "failed to validate the 'vars' expression: invalid operator 'foo'".
    ///
    /// Besides a plain array of expressions, the top level may itself be a logical form such
    /// as `["OR", [...], [...]]`, as lua-resty-expr allows.
    pub fn parse(value: &Value) -> Result<Vars, String> {
        parse_root(value)
            .map(|root| Vars { root })
            .map_err(|err| format!("failed to validate the 'vars' expression: {err}"))
    }

    /// Whether the request satisfies every expression.
    pub fn matches(&self, req: &dyn VarLookup) -> bool {
        self.root.eval(req)
    }
}

/// One node of the compiled tree.
#[derive(Debug, Clone)]
enum Node {
    /// `AND` / `OR` (possibly negated) over sub-expressions.
    Group {
        logic: Logic,
        negate: bool,
        children: Vec<Node>,
    },
    /// A single `[var, op, value]` test.
    Test(Test),
}

impl Node {
    fn eval(&self, req: &dyn VarLookup) -> bool {
        match self {
            Node::Group {
                logic,
                negate,
                children,
            } => {
                let hit = match logic {
                    Logic::And => children.iter().all(|child| child.eval(req)),
                    Logic::Or => children.iter().any(|child| child.eval(req)),
                };
                hit != *negate
            }
            Node::Test(test) => test.eval(req),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Logic {
    And,
    Or,
}

/// A comparison of one variable against a compiled value.
#[derive(Debug, Clone)]
struct Test {
    var: String,
    negate: bool,
    cond: Cond,
}

impl Test {
    fn eval(&self, req: &dyn VarLookup) -> bool {
        let value = req.var(&self.var);
        self.cond.eval(value.as_deref()) != self.negate
    }
}

/// An operator together with its compiled right-hand side.
#[derive(Debug, Clone)]
enum Cond {
    /// `== null`.
    Absent,
    /// `~= null`.
    Present,
    Equal(Literal),
    NotEqual(Literal),
    /// `>`, `>=`, `<`, `<=`; `None` when the value is not a number, which never matches.
    Numeric(Cmp, Option<f64>),
    /// `~~` and `~*` (the latter built case-insensitive).
    Regex(Regex),
    In(Vec<Literal>),
    Has(Literal),
    IpMatch(Vec<Cidr>),
}

impl Cond {
    /// Evaluates against the variable's value, `None` meaning absent.
    fn eval(&self, value: Option<&str>) -> bool {
        match self {
            Cond::Absent => value.is_none(),
            Cond::Present => value.is_some(),
            Cond::Equal(want) => value.is_some_and(|v| want.matches(v)),
            Cond::NotEqual(want) => !value.is_some_and(|v| want.matches(v)),
            Cond::Numeric(cmp, want) => match (value.and_then(parse_number), want) {
                (Some(have), Some(want)) => cmp.holds(have, *want),
                _ => false,
            },
            Cond::Regex(re) => value.is_some_and(|v| re.is_match(v)),
            Cond::In(list) => value.is_some_and(|v| list.iter().any(|want| want.matches(v))),
            Cond::Has(want) => {
                value.is_some_and(|v| v.split(',').any(|item| want.matches(item.trim())))
            }
            Cond::IpMatch(cidrs) => value
                .and_then(|v| v.trim().parse::<IpAddr>().ok())
                .is_some_and(|ip| cidrs.iter().any(|cidr| cidr.contains(ip))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Gt,
    Ge,
    Lt,
    Le,
}

impl Cmp {
    fn holds(self, have: f64, want: f64) -> bool {
        match self {
            Cmp::Gt => have > want,
            Cmp::Ge => have >= want,
            Cmp::Lt => have < want,
            Cmp::Le => have <= want,
        }
    }
}

/// A scalar from the JSON form, kept so that comparing against it needs no allocation.
#[derive(Debug, Clone, PartialEq)]
enum Literal {
    /// Strings, and booleans as `"true"` / `"false"`: compared byte for byte.
    Text(String),
    /// JSON numbers: compared numerically, as lua-resty-expr does, so `"10"` and `"10.0"`
    /// both equal `10`.
    Number(f64),
}

impl Literal {
    fn matches(&self, value: &str) -> bool {
        match self {
            Literal::Text(text) => text == value,
            Literal::Number(number) => parse_number(value) == Some(*number),
        }
    }
}

/// Parses a variable as a number the way Lua's `tonumber` mostly does: surrounding whitespace
/// is allowed, `inf` and `nan` spellings are not.
fn parse_number(value: &str) -> Option<f64> {
    let value = value.trim();
    let unsigned = value.strip_prefix(['+', '-']).unwrap_or(value);
    if !unsigned.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return None;
    }
    value.parse().ok()
}

/// Compiles the top level: `[]`, a list of expressions, or a logical form.
fn parse_root(value: &Value) -> Result<Node, String> {
    let items = value
        .as_array()
        .ok_or_else(|| format!("'vars' must be an array of expressions, got {value}"))?;
    match items.first() {
        None => Ok(Node::Group {
            logic: Logic::And,
            negate: false,
            children: Vec::new(),
        }),
        Some(Value::Array(_)) => parse_node(value, 0),
        Some(Value::String(first)) if logic_op(first).is_some() => parse_node(value, 0),
        Some(_) => Err(format!(
            "each expression must be wrapped in an array, as in [{value}], \
             or start with \"AND\", \"OR\", \"!AND\" or \"!OR\""
        )),
    }
}

/// Compiles one element of a list: an expression, a logical form, or a nested list (AND).
fn parse_node(value: &Value, depth: usize) -> Result<Node, String> {
    if depth > MAX_DEPTH {
        return Err(format!("expressions nest deeper than {MAX_DEPTH} levels"));
    }
    let items = value
        .as_array()
        .ok_or_else(|| format!("expression must be an array, got {value}"))?;
    match items.first() {
        None => Err("empty expression []".to_string()),
        Some(Value::Array(_)) => parse_group(Logic::And, false, items, depth),
        Some(Value::String(first)) => match logic_op(first) {
            Some((logic, negate)) => {
                let children = &items[1..];
                if children.is_empty() {
                    return Err(format!("'{first}' needs at least one sub-expression"));
                }
                parse_group(logic, negate, children, depth)
            }
            None => parse_test(items).map(Node::Test),
        },
        Some(other) => Err(format!(
            "variable name must be a string, got {other} in {value}"
        )),
    }
}

fn parse_group(logic: Logic, negate: bool, items: &[Value], depth: usize) -> Result<Node, String> {
    let children = items
        .iter()
        .map(|item| parse_node(item, depth + 1))
        .collect::<Result<_, _>>()?;
    Ok(Node::Group {
        logic,
        negate,
        children,
    })
}

/// Recognises a logical operator; case-insensitive, as in lua-resty-expr.
fn logic_op(word: &str) -> Option<(Logic, bool)> {
    let (negate, word) = match word.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, word),
    };
    if word.eq_ignore_ascii_case("AND") {
        Some((Logic::And, negate))
    } else if word.eq_ignore_ascii_case("OR") {
        Some((Logic::Or, negate))
    } else {
        None
    }
}

/// Compiles `[var, value]`, `[var, op, value]` or `[var, "!", op, value]`.
fn parse_test(items: &[Value]) -> Result<Test, String> {
    let whole = || Value::Array(items.to_vec());
    let (var, negate, op, value) = match items {
        [var, value] => (var, false, None, value),
        [var, op, value] => (var, false, Some(op), value),
        [var, not, op, value] if not.as_str() == Some("!") => (var, true, Some(op), value),
        [_, not, _, _] => {
            return Err(format!(
                "expected \"!\" as the second element of {}, got {not}",
                whole()
            ))
        }
        _ => {
            return Err(format!(
                "expression {} has {} elements, expected [var, value], [var, op, value] \
                 or [var, \"!\", op, value]",
                whole(),
                items.len()
            ))
        }
    };
    let var = match var.as_str() {
        Some(var) if !var.is_empty() => var.to_string(),
        _ => {
            return Err(format!(
                "variable name must be a non-empty string, got {var}"
            ))
        }
    };
    let cond = match op {
        None => parse_cond("==", value)?,
        Some(Value::String(op)) if op == "!" => {
            return Err(format!(
                "'!' in {} must be followed by an operator and a value",
                whole()
            ))
        }
        Some(Value::String(op)) => parse_cond(op, value)?,
        Some(op) => return Err(format!("operator must be a string, got {op}")),
    };
    Ok(Test { var, negate, cond })
}

/// Compiles an operator and its value; operators are case-insensitive, as in lua-resty-expr.
fn parse_cond(op: &str, value: &Value) -> Result<Cond, String> {
    let lower = op.to_ascii_lowercase();
    let needs_value = || {
        if value.is_null() {
            Err(format!("operator '{op}' needs a value, got null"))
        } else {
            Ok(())
        }
    };
    match lower.as_str() {
        "==" if value.is_null() => Ok(Cond::Absent),
        "~=" if value.is_null() => Ok(Cond::Present),
        "==" => Ok(Cond::Equal(parse_literal(op, value)?)),
        "~=" => Ok(Cond::NotEqual(parse_literal(op, value)?)),
        ">" | ">=" | "<" | "<=" => {
            needs_value()?;
            let cmp = match lower.as_str() {
                ">" => Cmp::Gt,
                ">=" => Cmp::Ge,
                "<" => Cmp::Lt,
                _ => Cmp::Le,
            };
            let number = match parse_literal(op, value)? {
                Literal::Number(n) => Some(n),
                Literal::Text(text) => parse_number(&text),
            };
            Ok(Cond::Numeric(cmp, number))
        }
        "~~" | "~*" => {
            needs_value()?;
            let pattern = value
                .as_str()
                .ok_or_else(|| format!("operator '{op}' needs a regex string, got {value}"))?;
            let regex = RegexBuilder::new(pattern)
                .case_insensitive(lower == "~*")
                .build()
                .map_err(|err| format!("invalid regex '{pattern}': {err}"))?;
            Ok(Cond::Regex(regex))
        }
        "in" => {
            needs_value()?;
            let list = value
                .as_array()
                .ok_or_else(|| format!("operator '{op}' needs an array value, got {value}"))?;
            let list = list
                .iter()
                .map(|item| parse_literal(op, item))
                .collect::<Result<_, _>>()?;
            Ok(Cond::In(list))
        }
        "has" => {
            needs_value()?;
            Ok(Cond::Has(parse_literal(op, value)?))
        }
        "ipmatch" => {
            needs_value()?;
            Ok(Cond::IpMatch(parse_cidrs(op, value)?))
        }
        _ => Err(format!("invalid operator '{op}'")),
    }
}

fn parse_literal(op: &str, value: &Value) -> Result<Literal, String> {
    match value {
        Value::String(text) => Ok(Literal::Text(text.clone())),
        Value::Bool(flag) => Ok(Literal::Text(flag.to_string())),
        Value::Number(number) => number
            .as_f64()
            .map(Literal::Number)
            .ok_or_else(|| format!("number {number} for operator '{op}' is out of range")),
        _ => Err(format!(
            "operator '{op}' needs a string, number or boolean value, got {value}"
        )),
    }
}

fn parse_cidrs(op: &str, value: &Value) -> Result<Vec<Cidr>, String> {
    let wrong = || {
        format!("operator '{op}' needs an IP/CIDR string or a non-empty array of them, got {value}")
    };
    match value {
        Value::String(text) => Ok(vec![Cidr::parse(text)?]),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|item| item.as_str().ok_or_else(wrong).and_then(Cidr::parse))
            .collect(),
        _ => Err(wrong()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;

    use super::*;

    /// A request whose variables are a fixed map.
    struct Req(HashMap<&'static str, &'static str>);

    impl VarLookup for Req {
        fn var(&self, name: &str) -> Option<Cow<'_, str>> {
            self.0.get(name).map(|v| Cow::Borrowed(*v))
        }
    }

    fn req(pairs: &[(&'static str, &'static str)]) -> Req {
        Req(pairs.iter().copied().collect())
    }

    /// Compiles `vars` and evaluates it against `pairs`.
    fn check(vars: Value, pairs: &[(&'static str, &'static str)]) -> bool {
        Vars::parse(&vars)
            .unwrap_or_else(|err| panic!("{vars} should parse: {err}"))
            .matches(&req(pairs))
    }

    fn parse_err(vars: Value) -> String {
        match Vars::parse(&vars) {
            Ok(parsed) => panic!("{vars} should not parse, got {parsed:?}"),
            Err(err) => err,
        }
    }

    #[test]
    fn empty_list_always_matches() {
        assert!(check(json!([]), &[]));
        assert!(check(json!([]), &[("arg_x", "1")]));
    }

    #[test]
    fn top_level_is_and() {
        let vars = json!([["arg_a", "==", "1"], ["arg_b", "==", "2"]]);
        assert!(check(vars.clone(), &[("arg_a", "1"), ("arg_b", "2")]));
        assert!(!check(vars.clone(), &[("arg_a", "1"), ("arg_b", "3")]));
        assert!(!check(vars, &[("arg_b", "2")]));
    }

    #[test]
    fn equal_and_not_equal() {
        assert!(check(json!([["arg_x", "==", "a"]]), &[("arg_x", "a")]));
        assert!(!check(json!([["arg_x", "==", "a"]]), &[("arg_x", "A")]));
        assert!(!check(json!([["arg_x", "==", "a"]]), &[]));
        assert!(check(json!([["arg_x", "~=", "a"]]), &[("arg_x", "b")]));
        assert!(!check(json!([["arg_x", "~=", "a"]]), &[("arg_x", "a")]));
        assert!(check(json!([["arg_x", "~=", "a"]]), &[]));
    }

    #[test]
    fn two_element_form_means_equal() {
        assert!(check(
            json!([["host", "example.com"]]),
            &[("host", "example.com")]
        ));
        assert!(!check(
            json!([["host", "example.com"]]),
            &[("host", "other")]
        ));
        assert!(!check(json!([["host", "example.com"]]), &[]));
        assert!(check(json!([["arg_n", 7]]), &[("arg_n", "7")]));
    }

    #[test]
    fn numbers_and_booleans_compare_by_value() {
        assert!(check(json!([["arg_n", "==", 10]]), &[("arg_n", "10")]));
        assert!(check(json!([["arg_n", "==", 10]]), &[("arg_n", "10.0")]));
        assert!(!check(json!([["arg_n", "==", 10]]), &[("arg_n", "ten")]));
        assert!(check(json!([["arg_n", "~=", 10]]), &[("arg_n", "ten")]));
        assert!(!check(json!([["arg_n", "~=", 10]]), &[("arg_n", "10")]));
        assert!(check(json!([["arg_n", "==", 1.5]]), &[("arg_n", "1.5")]));
        assert!(check(json!([["arg_b", "==", true]]), &[("arg_b", "true")]));
        assert!(!check(json!([["arg_b", "==", true]]), &[("arg_b", "1")]));
        assert!(check(json!([["arg_b", "~=", false]]), &[("arg_b", "true")]));
    }

    #[test]
    fn null_means_absent() {
        assert!(check(json!([["arg_x", "==", null]]), &[]));
        assert!(!check(json!([["arg_x", "==", null]]), &[("arg_x", "")]));
        assert!(check(json!([["arg_x", "~=", null]]), &[("arg_x", "")]));
        assert!(!check(json!([["arg_x", "~=", null]]), &[]));
        assert!(check(json!([["arg_x", null]]), &[]));
        assert!(check(
            json!([["arg_x", "!", "==", null]]),
            &[("arg_x", "1")]
        ));
    }

    #[test]
    fn numeric_operators() {
        let age = |op: &str, value: Value, have: &'static str| {
            check(json!([["arg_age", op, value]]), &[("arg_age", have)])
        };
        assert!(age(">", json!(18), "19"));
        assert!(!age(">", json!(18), "18"));
        assert!(age(">=", json!(18), "18"));
        assert!(!age(">=", json!(18), "17.5"));
        assert!(age("<", json!(18), "-3"));
        assert!(!age("<", json!(18), "18"));
        assert!(age("<=", json!(18), "18"));
        assert!(!age("<=", json!(18), "18.01"));
        assert!(age(">", json!("1e1"), " 11 "));
        assert!(age("<", json!(1), ".5"));
    }

    #[test]
    fn numeric_operators_reject_non_numbers() {
        assert!(!check(json!([["arg_age", ">", 18]]), &[("arg_age", "old")]));
        assert!(!check(json!([["arg_age", "<", 18]]), &[("arg_age", "")]));
        assert!(!check(
            json!([["arg_age", "<", 18]]),
            &[("arg_age", "-inf")]
        ));
        assert!(!check(json!([["arg_age", ">", 18]]), &[("arg_age", "NaN")]));
        assert!(!check(
            json!([["arg_age", ">", "abc"]]),
            &[("arg_age", "20")]
        ));
        assert!(!check(json!([["arg_age", "<", true]]), &[("arg_age", "0")]));
        assert!(!check(json!([["arg_age", ">=", 0]]), &[]));
        assert!(check(
            json!([["arg_age", "!", ">", 18]]),
            &[("arg_age", "x")]
        ));
    }

    #[test]
    fn regex_match() {
        let vars = json!([["uri", "~~", "/api/v[0-9]+/"]]);
        assert!(check(vars.clone(), &[("uri", "/x/api/v2/users")]));
        assert!(!check(vars.clone(), &[("uri", "/api/vx/")]));
        assert!(!check(vars, &[]));
        assert!(!check(
            json!([["uri", "~~", "^/api"]]),
            &[("uri", "/x/api")]
        ));
        assert!(!check(json!([["uri", "~~", "^/API"]]), &[("uri", "/api")]));
    }

    #[test]
    fn regex_match_case_insensitive() {
        let vars = json!([["http_user_agent", "~*", "^curl/"]]);
        assert!(check(vars.clone(), &[("http_user_agent", "CURL/8.0")]));
        assert!(check(vars.clone(), &[("http_user_agent", "curl/8.0")]));
        assert!(!check(
            vars.clone(),
            &[("http_user_agent", "Mozilla curl/8.0")]
        ));
        assert!(!check(vars, &[]));
        assert!(check(json!([["a", "~*", "B"]]), &[("a", "abc")]));
    }

    #[test]
    fn in_list() {
        let vars = json!([["request_method", "in", ["GET", "HEAD"]]]);
        assert!(check(vars.clone(), &[("request_method", "HEAD")]));
        assert!(!check(vars.clone(), &[("request_method", "POST")]));
        assert!(!check(vars, &[]));
        assert!(check(
            json!([["arg_n", "in", [1, "two", true]]]),
            &[("arg_n", "1")]
        ));
        assert!(check(
            json!([["arg_n", "in", [1, "two", true]]]),
            &[("arg_n", "true")]
        ));
        assert!(!check(json!([["arg_n", "in", []]]), &[("arg_n", "1")]));
        assert!(check(
            json!([["arg_n", "!", "in", ["a"]]]),
            &[("arg_n", "b")]
        ));
    }

    #[test]
    fn has_item() {
        let vars = json!([["http_x_tags", "has", "beta"]]);
        assert!(check(
            vars.clone(),
            &[("http_x_tags", "alpha, beta ,gamma")]
        ));
        assert!(check(vars.clone(), &[("http_x_tags", "beta")]));
        assert!(!check(vars.clone(), &[("http_x_tags", "alphabeta, betas")]));
        assert!(!check(vars, &[]));
        assert!(check(
            json!([["http_x_ids", "has", 3]]),
            &[("http_x_ids", "1,2,3")]
        ));
    }

    #[test]
    fn ipmatch_v4() {
        let vars = json!([["remote_addr", "ipmatch", "10.0.0.0/8"]]);
        assert!(check(vars.clone(), &[("remote_addr", "10.1.2.3")]));
        assert!(!check(vars.clone(), &[("remote_addr", "11.1.2.3")]));
        assert!(!check(vars.clone(), &[("remote_addr", "not an ip")]));
        assert!(!check(vars.clone(), &[]));
        assert!(check(vars, &[("remote_addr", "::ffff:10.9.9.9")]));
        let single = json!([["remote_addr", "ipmatch", "192.168.1.1"]]);
        assert!(check(single.clone(), &[("remote_addr", "192.168.1.1")]));
        assert!(!check(single, &[("remote_addr", "192.168.1.2")]));
        let host_bits = json!([["remote_addr", "ipmatch", "192.168.1.77/24"]]);
        assert!(check(host_bits, &[("remote_addr", "192.168.1.200")]));
        let everything = json!([["remote_addr", "ipmatch", "0.0.0.0/0"]]);
        assert!(check(everything.clone(), &[("remote_addr", "8.8.8.8")]));
        assert!(!check(everything, &[("remote_addr", "::1")]));
    }

    #[test]
    fn ipmatch_v6_and_lists() {
        let vars = json!([[
            "remote_addr",
            "ipmatch",
            ["127.0.0.1", "2001:db8::/32", "::1"]
        ]]);
        assert!(check(vars.clone(), &[("remote_addr", "127.0.0.1")]));
        assert!(check(vars.clone(), &[("remote_addr", "2001:db8:1::5")]));
        assert!(check(vars.clone(), &[("remote_addr", "::1")]));
        assert!(!check(vars.clone(), &[("remote_addr", "2001:db9::1")]));
        assert!(!check(vars.clone(), &[("remote_addr", "127.0.0.2")]));
        assert!(check(
            json!([["remote_addr", "!", "ipmatch", ["2001:db8::/32"]]]),
            &[("remote_addr", "10.0.0.1")]
        ));
        assert!(check(
            json!([["remote_addr", "ipmatch", "::/0"]]),
            &[("remote_addr", "fe80::1")]
        ));
    }

    #[test]
    fn negation() {
        assert!(check(json!([["arg_x", "!", "==", "a"]]), &[("arg_x", "b")]));
        assert!(!check(
            json!([["arg_x", "!", "==", "a"]]),
            &[("arg_x", "a")]
        ));
        assert!(check(json!([["arg_x", "!", "==", "a"]]), &[]));
        assert!(!check(json!([["arg_x", "!", "~=", "a"]]), &[]));
        assert!(check(
            json!([["arg_x", "!", "~~", "^a"]]),
            &[("arg_x", "ba")]
        ));
    }

    #[test]
    fn logical_forms() {
        let or = json!([["OR", ["arg_a", "==", "1"], ["arg_b", "==", "2"]]]);
        assert!(check(or.clone(), &[("arg_a", "1")]));
        assert!(check(or.clone(), &[("arg_b", "2")]));
        assert!(!check(or, &[("arg_a", "2"), ("arg_b", "1")]));

        let and = json!([["AND", ["arg_a", "==", "1"], ["arg_b", "==", "2"]]]);
        assert!(check(and.clone(), &[("arg_a", "1"), ("arg_b", "2")]));
        assert!(!check(and, &[("arg_a", "1")]));

        let not_or = json!([["!OR", ["arg_a", "==", "1"], ["arg_b", "==", "2"]]]);
        assert!(check(not_or.clone(), &[]));
        assert!(!check(not_or, &[("arg_b", "2")]));

        let not_and = json!([["!AND", ["arg_a", "==", "1"], ["arg_b", "==", "2"]]]);
        assert!(check(not_and.clone(), &[("arg_a", "1")]));
        assert!(!check(not_and, &[("arg_a", "1"), ("arg_b", "2")]));
    }

    #[test]
    fn nested_logical_forms() {
        // !( name == json AND (weight > 10 OR NOT height > 15) )
        let vars = json!([[
            "!AND",
            ["arg_name", "==", "json"],
            ["OR", ["arg_weight", ">", 10], ["arg_height", "!", ">", 15]]
        ]]);
        assert!(!check(
            vars.clone(),
            &[("arg_name", "json"), ("arg_weight", "12")]
        ));
        assert!(!check(
            vars.clone(),
            &[("arg_name", "json"), ("arg_height", "10")]
        ));
        assert!(check(
            vars.clone(),
            &[
                ("arg_name", "json"),
                ("arg_weight", "5"),
                ("arg_height", "20")
            ]
        ));
        assert!(check(vars, &[("arg_name", "xml"), ("arg_weight", "12")]));

        let deep = json!([[
            "OR",
            [
                "AND",
                ["arg_a", "1"],
                ["!OR", ["arg_b", "1"], ["arg_c", "1"]]
            ],
            [["arg_d", "1"], ["arg_e", "1"]]
        ]]);
        assert!(check(deep.clone(), &[("arg_a", "1")]));
        assert!(!check(deep.clone(), &[("arg_a", "1"), ("arg_c", "1")]));
        assert!(check(deep.clone(), &[("arg_d", "1"), ("arg_e", "1")]));
        assert!(!check(deep, &[("arg_d", "1")]));
    }

    #[test]
    fn top_level_logical_form_and_lowercase_operators() {
        let vars = json!(["OR", ["arg_a", "==", "1"], ["arg_b", "==", "2"]]);
        assert!(check(vars.clone(), &[("arg_b", "2")]));
        assert!(!check(vars, &[]));
        assert!(check(json!([["or", ["arg_a", "1"]]]), &[("arg_a", "1")]));
        assert!(check(json!([["arg_a", "IN", ["1"]]]), &[("arg_a", "1")]));
    }

    #[test]
    fn parse_errors_name_the_bad_part() {
        let prefix = "failed to validate the 'vars' expression: ";
        assert_eq!(
            parse_err(json!([["arg_x", "foo", "1"]])),
            format!("{prefix}invalid operator 'foo'")
        );
        let cases = [
            (json!({"arg_x": "1"}), "must be an array"),
            (json!("arg_x"), "must be an array"),
            (json!(["arg_x", "==", "1"]), "wrapped in an array"),
            (
                json!([["arg_x", "~~", "(unclosed"]]),
                "invalid regex '(unclosed'",
            ),
            (json!([["arg_x", "~*", 5]]), "needs a regex string"),
            (json!([["a", "ipmatch", "10.0.0.0/33"]]), "'10.0.0.0/33'"),
            (json!([["a", "ipmatch", "::/129"]]), "'::/129'"),
            (json!([["a", "ipmatch", "10.0.0/8"]]), "'10.0.0/8'"),
            (json!([["a", "ipmatch", "10.0.0.0/"]]), "'10.0.0.0/'"),
            (json!([["a", "ipmatch", ["10.0.0.1", "bogus"]]]), "'bogus'"),
            (json!([["a", "ipmatch", []]]), "non-empty array"),
            (json!([["a", "ipmatch", [1]]]), "non-empty array"),
            (json!([["a", "ipmatch", null]]), "needs a value"),
            (json!([["a", "in", "x"]]), "needs an array value"),
            (json!([["a", "in", [["x"]]]]), "got [\"x\"]"),
            (json!([["a", ">", null]]), "needs a value"),
            (
                json!([["a", "==", {"k": 1}]]),
                "needs a string, number or boolean",
            ),
            (json!([[5, "==", "1"]]), "variable name must be a string"),
            (json!([["a", 5, "1"]]), "operator must be a string"),
            (json!([["", "==", "1"]]), "non-empty string"),
            (json!([["a"]]), "has 1 elements"),
            (json!([["a", "!", "==", "1", "x"]]), "has 5 elements"),
            (json!([["a", "==", "!", "1"]]), "expected \"!\""),
            (json!([["a", "!", "1"]]), "'!'"),
            (json!([[]]), "empty expression"),
            (json!([["OR"]]), "'OR' needs at least one"),
            (json!([["AND", "arg_x"]]), "expression must be an array"),
        ];
        for (vars, want) in cases {
            let err = parse_err(vars.clone());
            assert!(err.starts_with(prefix), "{vars}: {err}");
            assert!(
                err.contains(want),
                "{vars}: {err:?} should mention {want:?}"
            );
        }
    }

    #[test]
    fn nesting_depth_is_bounded() {
        let mut vars = json!(["arg_a", "==", "1"]);
        for _ in 0..100 {
            vars = json!(["AND", vars]);
        }
        let err = parse_err(json!([vars]));
        assert!(err.contains("nest deeper"), "{err}");
    }
}
