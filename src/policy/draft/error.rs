//! Why a draft was not made or not accepted, and where the sentence at fault came from.

/// Where a sentence came from, for errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// The n-th sentence given on the command line (1-based).
    Sentence(usize),
    /// A line of a rules file (1-based).
    Line(usize),
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sentence(n) => write!(f, "sentence {n}"),
            Location::Line(n) => write!(f, "line {n}"),
        }
    }
}

/// A sentence the grammar could not read.
#[derive(Debug, Clone)]
pub struct SentenceError {
    /// Its argument or line number.
    pub location: Location,
    /// The sentence, whitespace collapsed.
    pub sentence: String,
    /// What was expected where reading stopped, or why the sentence is ambiguous.
    pub message: String,
}

impl std::fmt::Display for SentenceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: \"{}\": {}",
            self.location, self.sentence, self.message
        )
    }
}

/// Why no draft was made.
#[derive(Debug, thiserror::Error)]
pub enum DraftError {
    #[error(
        "no sentences to draft from: give at least one, e.g. \"agents may read any repository in acme\""
    )]
    Empty,
    #[error("{}", lines(.0))]
    Unparsed(Vec<SentenceError>),
    #[error("the service catalog cannot be loaded: {0}")]
    Catalog(String),
    #[error("the intent gate refused the test request for {sentence}: {reason}")]
    Witness { sentence: String, reason: String },
}

fn lines(errors: &[SentenceError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Why a drafted policy was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("the Rego does not compile:\n{0}")]
    Compile(String),
    #[error(
        "the Rego does not define data.agentgate.decision (it needs `package agentgate` and a `decision` rule)"
    )]
    NoDecision,
    #[error("there are no tests: a `cases:` table with at least one case is required")]
    NoTests,
}
