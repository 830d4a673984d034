//! Errors and validation problems. A policy is refused as a whole with every problem listed, so
//! that an admin fixes a file in one round trip rather than one error at a time.

use std::fmt;

/// One thing wrong (or suspicious) in a policy: where, what was written there, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Field path, e.g. `routes[2].hosts[0]`, `handlers.inject.reveal`, `runtime.outbound`.
    pub path: String,
    /// The offending value as written (empty when the problem is a missing value).
    pub value: String,
    /// What is wrong.
    pub message: String,
    /// What to do about it, when that can be said.
    pub hint: Option<String>,
}

impl Problem {
    pub(crate) fn new(
        path: impl Into<String>,
        value: impl Into<String>,
        message: impl Into<String>,
    ) -> Problem {
        Problem {
            path: path.into(),
            value: value.into(),
            message: message.into(),
            hint: None,
        }
    }

    pub(crate) fn hint(mut self, hint: impl Into<String>) -> Problem {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path)?;
        if !self.value.is_empty() {
            write!(f, " = {:?}", self.value)?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " ({h})")?;
        }
        Ok(())
    }
}

/// Everything that can go wrong turning text into a [`crate::CompiledPolicy`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The file is not valid TOML/JSON, or does not fit the policy's shape (unknown key,
    /// wrong type, missing field).
    #[error("{origin}:{line}:{column}: {message}{}", hint_suffix(.hint))]
    Parse {
        /// Where the text came from (usually the file name).
        origin: String,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column (in characters) of the error.
        column: usize,
        /// The parser's message.
        message: String,
        /// What to do, when that can be said (e.g. the closest valid key).
        hint: Option<String>,
    },
    /// The policy parsed but is not valid; every problem found is listed.
    #[error("invalid policy ({} problem{}):{}", .0.len(), if .0.len() == 1 { "" } else { "s" }, list(.0))]
    Invalid(Vec<Problem>),
    /// The policy could not be written back as TOML (e.g. a JSON `null` inside `params`,
    /// which TOML cannot represent).
    #[error("cannot write the policy as TOML: {0}")]
    Serialize(String),
}

impl PolicyError {
    /// The problems of an [`PolicyError::Invalid`] error (empty for other kinds).
    pub fn problems(&self) -> &[Problem] {
        match self {
            PolicyError::Invalid(p) => p,
            _ => &[],
        }
    }
}

fn hint_suffix(hint: &Option<String>) -> String {
    hint.as_ref()
        .map(|h| format!("\n  hint: {h}"))
        .unwrap_or_default()
}

fn list(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("\n  - {p}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_error_display_has_location_and_hint() {
        let e = PolicyError::Parse {
            origin: "p.toml".into(),
            line: 3,
            column: 7,
            message: "boom".into(),
            hint: Some("do x".into()),
        };
        assert_eq!(e.to_string(), "p.toml:3:7: boom\n  hint: do x");
    }

    #[test]
    fn invalid_lists_every_problem() {
        let e = PolicyError::Invalid(vec![
            Problem::new("a", "1", "bad").hint("fix"),
            Problem::new("b", "", "missing"),
        ]);
        assert_eq!(
            e.to_string(),
            "invalid policy (2 problems):\n  - a = \"1\": bad (fix)\n  - b: missing"
        );
        assert_eq!(e.problems().len(), 2);
    }
}
