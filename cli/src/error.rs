//! The one error type of the CLI: what failed, why, what to do, and the exit code.

use std::fmt;

use looper_api::{ErrorBody, ErrorCode};

/// Exit code of a successful command.
pub const EXIT_OK: i32 = 0;
/// Exit code of a command that failed (node unreachable, refused, swap failed, ...).
pub const EXIT_FAILURE: i32 = 1;
/// Exit code of a usage error (bad flag or value, missing confirmation).
pub const EXIT_USAGE: i32 = 2;

/// An error shown as one line: `error: <what failed>: <why> (<what to do>)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    /// The process exit code ([`EXIT_FAILURE`] or [`EXIT_USAGE`]).
    pub exit: i32,
    /// What failed ("cannot reach looper-node at http://127.0.0.1:28839").
    pub what: String,
    /// Why it failed.
    pub why: String,
    /// What the user can do about it (may be empty).
    pub todo: String,
    /// The node's error (its stable code and message) when the node answered with one.
    pub api: Option<Box<ErrorBody>>,
    /// The HTTP status when the node answered with an error.
    pub status: Option<u16>,
}

impl CliError {
    /// A failure (exit code 1).
    pub fn failure(
        what: impl Into<String>,
        why: impl Into<String>,
        todo: impl Into<String>,
    ) -> Self {
        Self {
            exit: EXIT_FAILURE,
            what: what.into(),
            why: why.into(),
            todo: todo.into(),
            api: None,
            status: None,
        }
    }

    /// A usage error (exit code 2).
    pub fn usage(what: impl Into<String>, why: impl Into<String>, todo: impl Into<String>) -> Self {
        Self { exit: EXIT_USAGE, ..Self::failure(what, why, todo) }
    }

    /// Replaces the advice.
    pub fn with_todo(mut self, todo: impl Into<String>) -> Self {
        self.todo = todo.into();
        self
    }

    /// The node's error code, when the node answered with an error.
    pub fn code(&self) -> Option<&ErrorCode> {
        self.api.as_ref().map(|e| &e.code)
    }

    /// Whether the node answered `404 not_found`.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(&ErrorCode::NotFound)
    }

    /// The JSON form printed on stdout with `--json` when the node answered with an error:
    /// `{"error": {"code", "message"}, "status"}`; `None` for the CLI's own errors.
    pub fn to_json(&self) -> Option<serde_json::Value> {
        let api = self.api.as_ref()?;
        Some(serde_json::json!({"error": api, "status": self.status}))
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.why)?;
        if !self.todo.is_empty() {
            write!(f, " ({})", self.todo)?;
        }
        Ok(())
    }
}

impl std::error::Error for CliError {}

/// Result of a command.
pub type CliResult<T = ()> = Result<T, CliError>;
