//! What an operation does, as far as policy cares.

use serde::Deserialize;

/// What an operation does, as far as policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// Reads only.
    Read,
    /// Creates or changes something.
    Write,
    /// Deletes, destroys or revokes something.
    Delete,
    /// Not in the catalog: nothing is known about it.
    Unknown,
}

impl Class {
    /// The name policies see in `action.properties.class`.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Read => "read",
            Class::Write => "write",
            Class::Delete => "delete",
            Class::Unknown => "unknown",
        }
    }

    /// Ordering for "the most dangerous of several": unknown and delete first.
    pub fn danger(self) -> u8 {
        match self {
            Class::Read => 0,
            Class::Write => 1,
            Class::Delete => 2,
            Class::Unknown => 3,
        }
    }
}
