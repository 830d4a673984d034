//! The binding's params, checked and compiled once per request into [`Rules`], and the
//! decisions they make on one JSON-RPC method or tool call. Pure: unit-tested on the host.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

/// The params as the policy writes them (`[handlers.NAME.params]`).
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Tools the sandbox may call (globs). When given, every other tool is refused.
    #[serde(default)]
    pub allow_tools: Option<Vec<String>>,
    /// Tools the sandbox may never call (globs); wins over `allow_tools`.
    #[serde(default)]
    pub deny_tools: Vec<String>,
    /// Per tool (a glob), per top-level argument: the rule its value must meet.
    #[serde(default)]
    pub args: BTreeMap<String, BTreeMap<String, ArgRule>>,
    /// The other JSON-RPC methods the sandbox may call (globs); absent: all of them.
    #[serde(default)]
    pub allow_methods: Option<Vec<String>>,
    /// Remove the tools the sandbox may not call from `tools/list` results.
    #[serde(default)]
    pub filter_lists: bool,
    /// The `serverInfo.name` the server's `initialize` result must carry.
    #[serde(default)]
    pub pin_server: Option<String>,
}

/// A rule on one argument's value, as written: a string is a glob (exact when it has no `*`
/// or `?`), a number must be equal, a list is one-of; the table forms say which explicitly.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum ArgRule {
    /// `repo = "sandbox-*"`.
    Glob(String),
    /// `count = 3`.
    Number(serde_json::Number),
    /// `visibility = ["private", "internal"]`.
    OneOf(Vec<Scalar>),
    /// `{ equals = "a*b" }`, `{ glob = "x-*" }` or `{ one_of = [...] }`.
    Explicit(Explicit),
}

/// The table form of an [`ArgRule`]: exactly one key.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Explicit {
    #[serde(default)]
    equals: Option<Scalar>,
    #[serde(default)]
    glob: Option<String>,
    #[serde(default)]
    one_of: Option<Vec<Scalar>>,
}

/// A string or a number, the argument values rules apply to.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(untagged)]
pub enum Scalar {
    /// A string.
    Text(String),
    /// A number (compared by value: `3` equals `3.0`).
    Number(serde_json::Number),
}

impl Scalar {
    fn of(v: &Value) -> Option<Scalar> {
        match v {
            Value::String(s) => Some(Scalar::Text(s.clone())),
            Value::Number(n) => Some(Scalar::Number(n.clone())),
            _ => None,
        }
    }

    fn same(&self, other: &Scalar) -> bool {
        match (self, other) {
            (Scalar::Text(a), Scalar::Text(b)) => a == b,
            (Scalar::Number(a), Scalar::Number(b)) => a == b || a.as_f64() == b.as_f64(),
            _ => false,
        }
    }

    fn show(&self) -> String {
        match self {
            Scalar::Text(s) => Value::String(clip(s)).to_string(),
            Scalar::Number(n) => n.to_string(),
        }
    }
}

/// A compiled argument rule.
#[derive(Debug, Clone)]
enum Check {
    Equals(Scalar),
    Glob(String),
    OneOf(Vec<Scalar>),
}

impl Check {
    fn compile(rule: &ArgRule, at: &str) -> Result<Check, String> {
        Ok(match rule {
            ArgRule::Glob(g) if g.contains(['*', '?']) => Check::Glob(g.clone()),
            ArgRule::Glob(g) => Check::Equals(Scalar::Text(g.clone())),
            ArgRule::Number(n) => Check::Equals(Scalar::Number(n.clone())),
            ArgRule::OneOf(v) if v.is_empty() => {
                return Err(format!("{at}: an empty one-of list allows nothing"))
            }
            ArgRule::OneOf(v) => Check::OneOf(v.clone()),
            ArgRule::Explicit(e) => match (&e.equals, &e.glob, &e.one_of) {
                (Some(v), None, None) => Check::Equals(v.clone()),
                (None, Some(g), None) => Check::Glob(g.clone()),
                (None, None, Some(v)) if !v.is_empty() => Check::OneOf(v.clone()),
                _ => {
                    return Err(format!(
                        "{at}: give exactly one of equals, glob or one_of (a non-empty list)"
                    ))
                }
            },
        })
    }

    fn allows(&self, v: &Scalar) -> bool {
        match self {
            Check::Equals(want) => want.same(v),
            Check::Glob(g) => matches!(v, Scalar::Text(s) if glob(g, s)),
            Check::OneOf(list) => list.iter().any(|w| w.same(v)),
        }
    }

    fn describe(&self) -> String {
        match self {
            Check::Equals(v) => format!("equals {}", v.show()),
            Check::Glob(g) => format!("glob {}", Value::String(g.clone())),
            Check::OneOf(list) => {
                let items: Vec<String> = list.iter().map(Scalar::show).collect();
                format!("one of [{}]", items.join(", "))
            }
        }
    }
}

/// The argument rules of the tools matching one glob.
#[derive(Debug, Clone)]
struct ToolArgs {
    tool: String,
    args: Vec<(String, Check)>,
}

/// What the params decide, ready to apply.
#[derive(Debug, Clone)]
pub struct Rules {
    allow_tools: Option<Vec<String>>,
    deny_tools: Vec<String>,
    args: Vec<ToolArgs>,
    allow_methods: Option<Vec<String>>,
    /// Filter `tools/list` results.
    pub filter_lists: bool,
    /// The server name `initialize` results must carry.
    pub pin_server: Option<String>,
}

/// A refusal of one call: the JSON-RPC error code, the message (names the method or tool and
/// the rule) and the rule, for the error's `data`.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// JSON-RPC error code.
    pub code: i64,
    /// Safe to show the client.
    pub message: String,
    /// The rule that refused, as the policy spells it (`deny_tools`, `args.T.A`, ...).
    pub rule: String,
}

/// Refused by the binding's rules (implementation-defined server error range).
pub const POLICY_DENIED: i64 = -32003;
/// JSON-RPC: the params of a call are invalid.
pub const INVALID_PARAMS: i64 = -32602;

/// Methods that always pass: the handshake, liveness, notifications and the tool listing
/// (filtered in the answer when `filter_lists` is on).
pub fn always_passes(method: &str) -> bool {
    matches!(method, "initialize" | "ping" | "tools/list") || method.starts_with("notifications/")
}

impl Rules {
    /// Checks and compiles the params; the error names the offending key.
    pub fn compile(p: Params) -> Result<Rules, String> {
        let mut args = Vec::with_capacity(p.args.len());
        for (tool, rules) in &p.args {
            let mut compiled = Vec::with_capacity(rules.len());
            for (arg, rule) in rules {
                compiled.push((
                    arg.clone(),
                    Check::compile(rule, &format!("args.{tool}.{arg}"))?,
                ));
            }
            args.push(ToolArgs {
                tool: tool.clone(),
                args: compiled,
            });
        }
        if p.pin_server.as_deref() == Some("") {
            return Err("pin_server: the server name must not be empty".into());
        }
        Ok(Rules {
            allow_tools: p.allow_tools,
            deny_tools: p.deny_tools,
            args,
            allow_methods: p.allow_methods,
            filter_lists: p.filter_lists,
            pin_server: p.pin_server,
        })
    }

    /// Whether the sandbox may call `tool` at all (arguments aside): what `tools/list`
    /// filtering keeps.
    pub fn tool_allowed(&self, tool: &str) -> Result<(), Refusal> {
        if let Some(p) = self.deny_tools.iter().find(|p| glob(p, tool)) {
            return Err(Refusal {
                code: POLICY_DENIED,
                message: format!(
                    "tool {} is denied by deny_tools pattern {}",
                    quote(tool),
                    quote(p)
                ),
                rule: "deny_tools".into(),
            });
        }
        match &self.allow_tools {
            Some(allow) if !allow.iter().any(|p| glob(p, tool)) => Err(Refusal {
                code: POLICY_DENIED,
                message: format!("tool {} is not in allow_tools", quote(tool)),
                rule: "allow_tools".into(),
            }),
            _ => Ok(()),
        }
    }

    /// The decision on a `tools/call` of `tool` with `arguments` (the call's
    /// `params.arguments`).
    pub fn check_call(&self, tool: &str, arguments: Option<&Value>) -> Result<(), Refusal> {
        self.tool_allowed(tool)?;
        let empty = Map::new();
        let given = match arguments {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(m)) => m,
            Some(_) => {
                return Err(Refusal {
                    code: INVALID_PARAMS,
                    message: format!(
                        "tools/call of {}: params.arguments must be an object",
                        quote(tool)
                    ),
                    rule: "jsonrpc".into(),
                })
            }
        };
        for t in self.args.iter().filter(|t| glob(&t.tool, tool)) {
            for (arg, check) in &t.args {
                let rule = format!("args.{}.{arg}", t.tool);
                let refuse = |why: String| Refusal {
                    code: POLICY_DENIED,
                    message: format!(
                        "tool {}: argument {arg} {why}; rule {rule} requires {}",
                        quote(tool),
                        check.describe()
                    ),
                    rule: rule.clone(),
                };
                let Some(v) = given.get(arg) else {
                    return Err(refuse("is missing".into()));
                };
                let Some(v) = Scalar::of(v) else {
                    return Err(refuse("is not a string or a number".into()));
                };
                if !check.allows(&v) {
                    return Err(refuse(format!("= {} is not allowed", v.show())));
                }
            }
        }
        Ok(())
    }

    /// The decision on a method other than `tools/call` and those that always pass.
    pub fn check_method(&self, method: &str) -> Result<(), Refusal> {
        match &self.allow_methods {
            Some(allow) if !allow.iter().any(|p| glob(p, method)) => Err(Refusal {
                code: POLICY_DENIED,
                message: format!("method {} is not in allow_methods", quote(method)),
                rule: "allow_methods".into(),
            }),
            _ => Ok(()),
        }
    }
}

/// A JSON string literal of `s`, clipped: messages quote what the client sent.
fn quote(s: &str) -> String {
    Value::String(clip(s)).to_string()
}

/// At most 64 characters of what the client sent goes into a message.
fn clip(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// Shell-style glob: `*` any run of characters, `?` one character, the rest literal.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was and which text position it matched up to: backtracking to it
    // only keeps matching linear in practice (no exponential blow-up on `*a*a*a`).
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(v: Value) -> Rules {
        Rules::compile(serde_json::from_value(v).unwrap()).unwrap()
    }

    #[test]
    fn glob_matches_stars_and_question_marks() {
        assert!(glob("search_*", "search_code"));
        assert!(glob("search_*", "search_"));
        assert!(!glob("search_*", "xsearch_code"));
        assert!(glob("*_repo", "delete_repo"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
        assert!(glob("get_?", "get_x"));
        assert!(!glob("get_?", "get_xy"));
        assert!(glob("*", ""));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
        assert!(glob("*a*a*a*b", &format!("{}b", "a".repeat(200))));
        assert!(!glob("*a*a*a*b", &"a".repeat(200)));
    }

    #[test]
    fn deny_wins_and_allow_is_default_deny() {
        let r = rules(json!({"allow_tools": ["*_repo", "search"], "deny_tools": ["delete_*"]}));
        assert!(r.tool_allowed("create_repo").is_ok());
        assert!(r.tool_allowed("search").is_ok());
        let e = r.tool_allowed("delete_repo").unwrap_err();
        assert_eq!(e.rule, "deny_tools");
        assert_eq!(
            e.message,
            r#"tool "delete_repo" is denied by deny_tools pattern "delete_*""#
        );
        let e = r.tool_allowed("send_email").unwrap_err();
        assert_eq!(e.rule, "allow_tools");
        assert_eq!(e.code, POLICY_DENIED);
        assert!(e.message.contains("\"send_email\" is not in allow_tools"));
    }

    #[test]
    fn without_lists_every_tool_passes_and_deny_alone_denies_only_its_matches() {
        let r = rules(json!({}));
        assert!(r.tool_allowed("anything").is_ok());
        let r = rules(json!({"deny_tools": ["send_*"]}));
        assert!(r.tool_allowed("read").is_ok());
        assert!(r.tool_allowed("send_email").is_err());
    }

    #[test]
    fn argument_rules_equal_glob_and_one_of() {
        let r = rules(json!({"args": {
            "create_*": {"repo": "sandbox-*", "owner": "me"},
            "resize": {"size": 3, "zone": ["a", 2], "name": {"equals": "x*"}},
        }}));
        let ok = json!({"repo": "sandbox-1", "owner": "me", "other": [1]});
        assert!(r.check_call("create_issue", Some(&ok)).is_ok());
        let e = r
            .check_call(
                "create_issue",
                Some(&json!({"repo": "prod", "owner": "me"})),
            )
            .unwrap_err();
        assert_eq!(e.rule, "args.create_*.repo");
        assert_eq!(
            e.message,
            "tool \"create_issue\": argument repo = \"prod\" is not allowed; rule \
             args.create_*.repo requires glob \"sandbox-*\""
        );
        let e = r
            .check_call("create_issue", Some(&json!({"repo": "sandbox-1"})))
            .unwrap_err();
        assert!(
            e.message.contains("argument owner is missing"),
            "{}",
            e.message
        );
        let e = r
            .check_call("create_issue", Some(&json!({"repo": 7, "owner": "me"})))
            .unwrap_err();
        assert!(e.message.contains("= 7 is not allowed"), "{}", e.message);
        let e = r
            .check_call("create_issue", Some(&json!({"repo": ["x"], "owner": "me"})))
            .unwrap_err();
        assert!(
            e.message.contains("not a string or a number"),
            "{}",
            e.message
        );

        let good = json!({"size": 3.0, "zone": 2, "name": "x*"});
        assert!(r.check_call("resize", Some(&good)).is_ok());
        let bad = json!({"size": 3, "zone": "b", "name": "x*"});
        let e = r.check_call("resize", Some(&bad)).unwrap_err();
        assert!(e.message.contains("one of [\"a\", 2]"), "{}", e.message);
        let literal = json!({"size": 3, "zone": "a", "name": "xy"});
        assert!(r.check_call("resize", Some(&literal)).is_err());
        // Tools without rules take any arguments.
        assert!(r
            .check_call("other", Some(&json!({"repo": "prod"})))
            .is_ok());
        assert_eq!(
            r.check_call("other", Some(&json!("text")))
                .unwrap_err()
                .code,
            INVALID_PARAMS
        );
    }

    #[test]
    fn methods_pass_unless_allow_methods_is_given() {
        assert!(always_passes("initialize"));
        assert!(always_passes("notifications/initialized"));
        assert!(always_passes("tools/list"));
        assert!(!always_passes("tools/call"));
        assert!(!always_passes("resources/read"));
        let r = rules(json!({}));
        assert!(r.check_method("resources/read").is_ok());
        let r = rules(json!({"allow_methods": ["resources/*"]}));
        assert!(r.check_method("resources/read").is_ok());
        let e = r.check_method("prompts/get").unwrap_err();
        assert_eq!(e.message, "method \"prompts/get\" is not in allow_methods");
    }

    #[test]
    fn bad_params_are_named() {
        let bad: Result<Params, _> = serde_json::from_value(json!({"allow_tool": ["x"]}));
        assert!(bad.unwrap_err().to_string().contains("allow_tool"));
        let p: Params =
            serde_json::from_value(json!({"args": {"t": {"a": {"glob": "x", "equals": 1}}}}))
                .unwrap();
        let e = Rules::compile(p).unwrap_err();
        assert!(e.starts_with("args.t.a: give exactly one of"), "{e}");
        let p: Params = serde_json::from_value(json!({"args": {"t": {"a": []}}})).unwrap();
        assert!(Rules::compile(p).unwrap_err().contains("args.t.a"));
    }

    #[test]
    fn long_values_are_clipped_in_messages() {
        let r = rules(json!({"deny_tools": ["*"]}));
        let long = "x".repeat(500);
        let e = r.tool_allowed(&long).unwrap_err();
        assert!(e.message.len() < 150, "{}", e.message);
    }
}
