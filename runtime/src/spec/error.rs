//! Spec errors: every one names the file, the line and column, and the field.

use std::fmt;
use std::path::PathBuf;

/// Where in a spec file something is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// 1-based line (0 when unknown).
    pub line: u64,
    /// 1-based column (0 when unknown).
    pub column: u64,
}

impl Position {
    /// From a serde-saphyr location.
    pub fn from_location(l: &serde_saphyr::Location) -> Self {
        Self {
            line: l.line(),
            column: l.column(),
        }
    }
}

/// A spec that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The file cannot be read.
    #[error("{file}: cannot read spec: {message}")]
    Read {
        /// The spec file.
        file: PathBuf,
        /// Why.
        message: String,
    },
    /// A field has a bad value, is unknown, or is missing.
    #[error("{}", Located(.0))]
    Field(Box<FieldError>),
    /// A command-line override is invalid.
    #[error("{flag}: {message}")]
    Override {
        /// The flag (`--placement`, ...).
        flag: &'static str,
        /// Why.
        message: String,
    },
}

/// A located field error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The spec file.
    pub file: PathBuf,
    /// Where.
    pub pos: Position,
    /// Dotted path of the field (`stages[0].kernel`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

struct Located<'a>(&'a FieldError);

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.0;
        write!(
            f,
            "{}:{}:{}: {}: {}",
            e.file.display(),
            e.pos.line,
            e.pos.column,
            e.field,
            e.message
        )
    }
}

impl SpecError {
    /// A field error.
    pub fn field(
        file: impl Into<PathBuf>,
        pos: Position,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        SpecError::Field(Box::new(FieldError {
            file: file.into(),
            pos,
            field: field.into(),
            message: message.into(),
        }))
    }

    /// The same error with a field path starting `from` renamed to start
    /// `to` (`source.npy.path` → `sources[2].npy.path`).
    #[must_use]
    pub fn with_field_prefix(self, from: &str, to: &str) -> Self {
        match self {
            SpecError::Field(mut e) => {
                if let Some(rest) = e.field.strip_prefix(from) {
                    e.field = format!("{to}{rest}");
                }
                SpecError::Field(e)
            }
            other => other,
        }
    }
}
