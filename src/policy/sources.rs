//! A policy directory's files, their hash, and their compilation into a regorus policy.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use super::cache::DecisionCache;
use super::config::ENTRYPOINT;
use super::error::PolicyError;

/// One successfully compiled policy directory.
pub struct Loaded {
    pub(super) compiled: Option<regorus::CompiledPolicy>,
    /// Decisions remembered for repeated inputs; `None` for a policy that may decide
    /// differently on the same input.
    pub(super) decisions: Option<DecisionCache>,
    /// The policy cannot read the request's time (see `policy/clockless.rs`).
    pub(super) clockless: bool,
    /// SHA-256 over file names and contents, hex; recorded with every decision.
    pub hash: Arc<str>,
    pub files: Vec<String>,
    pub loaded_at: SystemTime,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("hash", &self.hash)
            .field("files", &self.files)
            .finish()
    }
}

/// The sources of a policy directory, read once.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub rego: Vec<(String, String)>,
    pub data: Vec<(String, String)>,
    /// Test-only files (`*_test.rego`, `*_test.yaml`, `*_test.json`).
    pub tests: Vec<(String, String)>,
}

impl Sources {
    /// Sources from named texts (an upload), sorted by name like a directory's; names
    /// that are neither Rego, data nor tests are ignored.
    pub fn from_files(files: impl IntoIterator<Item = (String, String)>) -> Sources {
        let mut files: Vec<(String, String)> = files.into_iter().collect();
        files.sort();
        let mut out = Sources::default();
        for (name, text) in files {
            match classify(&name) {
                FileKind::Rego => out.rego.push((name, text)),
                FileKind::Data => out.data.push((name, text)),
                FileKind::Test => out.tests.push((name, text)),
                FileKind::Other => {}
            }
        }
        out
    }

    /// Reads a directory (not recursive; `templates/` and other folders are ignored).
    pub fn read_dir(dir: &Path) -> Result<Sources, PolicyError> {
        let io = |source| PolicyError::Io {
            path: dir.to_owned(),
            source,
        };
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        names.sort();
        let mut sources = Sources::default();
        for path in names {
            let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            let kind = classify(&name);
            if kind == FileKind::Other {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|source| PolicyError::Io {
                path: path.clone(),
                source,
            })?;
            match kind {
                FileKind::Rego => sources.rego.push((name, text)),
                FileKind::Data => sources.data.push((name, text)),
                FileKind::Test => sources.tests.push((name, text)),
                FileKind::Other => {}
            }
        }
        Ok(sources)
    }

    /// SHA-256 over the policy and data files (not tests), hex.
    pub fn hash(&self) -> String {
        let mut h = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for (name, text) in self.rego.iter().chain(&self.data) {
            h.update(&(name.len() as u64).to_be_bytes());
            h.update(name.as_bytes());
            h.update(&(text.len() as u64).to_be_bytes());
            h.update(text.as_bytes());
        }
        crate::audit::chain::hex(h.finish().as_ref())
    }

    /// Builds a regorus engine with these policies and data (and tests when asked).
    pub fn engine(&self, with_tests: bool) -> Result<regorus::Engine, PolicyError> {
        let mut engine = regorus::Engine::new();
        engine.set_strict_builtin_errors(true);
        let tests = self
            .tests
            .iter()
            .filter(|(n, _)| with_tests && n.ends_with(".rego"));
        for (name, text) in self.rego.iter().chain(tests) {
            engine
                .add_policy(name.clone(), text.clone())
                .map_err(|e| PolicyError::Compile {
                    file: name.clone(),
                    reason: e.to_string(),
                })?;
        }
        for (name, text) in &self.data {
            let value = regorus::Value::from_json_str(text).map_err(|e| PolicyError::Data {
                file: name.clone(),
                reason: e.to_string(),
            })?;
            if value.as_object().is_err() {
                return Err(PolicyError::Data {
                    file: name.clone(),
                    reason: "must be a JSON object (it is merged at the root of data)".into(),
                });
            }
            engine.add_data(value).map_err(|e| PolicyError::Data {
                file: name.clone(),
                reason: e.to_string(),
            })?;
        }
        Ok(engine)
    }

    /// Compiles the policy for [`ENTRYPOINT`].
    pub fn compile(&self, dir: &Path) -> Result<Loaded, PolicyError> {
        let hash: Arc<str> = self.hash().into();
        let files = self
            .rego
            .iter()
            .chain(&self.data)
            .map(|(n, _)| n.clone())
            .collect();
        if self.rego.is_empty() {
            return Ok(Loaded {
                compiled: None,
                decisions: None,
                clockless: true,
                hash,
                files,
                loaded_at: SystemTime::now(),
            });
        }
        let mut engine = self.engine(false)?;
        let compiled = engine
            .compile_with_entrypoint(&ENTRYPOINT.into())
            .map_err(|e| {
                let text = e.to_string();
                if text.contains("not found") || text.contains("undefined") {
                    PolicyError::NoEntrypoint(dir.to_owned())
                } else {
                    PolicyError::Compile {
                        file: dir.display().to_string(),
                        reason: text,
                    }
                }
            })?;
        Ok(Loaded {
            compiled: Some(compiled),
            decisions: DecisionCache::for_policy(self.rego.iter().map(|(_, text)| text.as_str())),
            clockless: super::clockless::clockless(self.rego.iter().map(|(_, t)| t.as_str())),
            hash,
            files,
            loaded_at: SystemTime::now(),
        })
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum FileKind {
    Rego,
    Data,
    Test,
    Other,
}

pub(super) fn classify(name: &str) -> FileKind {
    if name.starts_with('.') {
        FileKind::Other
    } else if name.ends_with("_test.rego")
        || name.ends_with("_test.yaml")
        || name.ends_with("_test.yml")
        || name.ends_with("_test.json")
    {
        FileKind::Test
    } else if name.ends_with(".rego") {
        FileKind::Rego
    } else if name.ends_with(".json") {
        FileKind::Data
    } else {
        FileKind::Other
    }
}
