//! The policies compiled into the binary: the default policy, its data and tests, and the
//! templates. They are what a fresh machine enforces, and what the state directory's
//! `policies/` is seeded with on first run, for the user to edit.

use std::path::Path;

use super::sources::Sources;

macro_rules! files {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../../policies/", $name)))),*]
    };
}

/// The default policy directory: `(relative path, contents)`.
pub const DEFAULT_FILES: &[(&str, &str)] = files![
    "default.rego",
    "settings.json",
    "default_test.yaml",
    "README.md",
    "templates/github-readonly/policy.rego",
    "templates/github-readonly/policy_test.yaml",
    "templates/github-readonly/README.md",
    "templates/gmail-guarded/policy.rego",
    "templates/gmail-guarded/settings.json",
    "templates/gmail-guarded/policy_test.yaml",
    "templates/gmail-guarded/README.md",
    "templates/slack-no-public/policy.rego",
    "templates/slack-no-public/settings.json",
    "templates/slack-no-public/policy_test.yaml",
    "templates/slack-no-public/README.md",
    "templates/crewai/policy.rego",
    "templates/crewai/settings.json",
    "templates/crewai/policy_test.yaml",
    "templates/crewai/README.md",
    "templates/langgraph/policy.rego",
    "templates/langgraph/settings.json",
    "templates/langgraph/policy_test.yaml",
    "templates/langgraph/README.md",
    "templates/mcp-github/policy.rego",
    "templates/mcp-github/policy_test.yaml",
    "templates/mcp-github/README.md",
];

/// The default policy as in-memory sources (top-level files only, like a directory read).
pub fn default_sources() -> Sources {
    let mut sources = Sources::default();
    for (name, text) in DEFAULT_FILES.iter().filter(|(n, _)| !n.contains('/')) {
        let entry = ((*name).to_owned(), (*text).to_owned());
        match super::sources::classify(name) {
            super::sources::FileKind::Rego => sources.rego.push(entry),
            super::sources::FileKind::Data => sources.data.push(entry),
            super::sources::FileKind::Test => sources.tests.push(entry),
            super::sources::FileKind::Other => {}
        }
    }
    sources
}

/// Writes the embedded policy files into `dir` if it does not exist yet; returns whether it
/// did. An existing directory is the user's and is never touched.
pub fn seed(dir: &Path) -> std::io::Result<bool> {
    if dir.exists() {
        return Ok(false);
    }
    let parent = dir.parent().unwrap_or(Path::new("."));
    // Written beside the target and renamed, so a crash never leaves half a policy.
    let staging = parent.join(format!(
        ".{}.seeding",
        dir.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("policies")
    ));
    let _ = std::fs::remove_dir_all(&staging);
    for (name, text) in DEFAULT_FILES {
        let path = staging.join(name);
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p)?;
        }
        std::fs::write(&path, text)?;
    }
    std::fs::rename(&staging, dir)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file under `policies/` is embedded (a new template cannot be forgotten).
    #[test]
    fn embeds_every_policy_file() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let mut on_disk = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    on_disk.push(p.strip_prefix(&root).unwrap().to_str().unwrap().to_owned());
                }
            }
        }
        on_disk.sort();
        let mut embedded: Vec<String> =
            DEFAULT_FILES.iter().map(|(n, _)| (*n).to_owned()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded);
    }

    #[test]
    fn seeds_once_and_never_overwrites() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("policies");
        assert!(seed(&dir).unwrap());
        let rego = dir.join("default.rego");
        assert_eq!(std::fs::read_to_string(&rego).unwrap(), DEFAULT_FILES[0].1);
        std::fs::write(&rego, "package agentgate\n").unwrap();
        assert!(!seed(&dir).unwrap());
        assert_eq!(
            std::fs::read_to_string(&rego).unwrap(),
            "package agentgate\n"
        );
        assert!(dir.join("templates/gmail-guarded/policy.rego").exists());
    }
}
