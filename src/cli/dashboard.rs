//! `agentgate dashboard`: prints (and opens) a one-time sign-in link to the running
//! instance's dashboard, as Jupyter does. The link works once, for 5 minutes; the token it
//! is swapped for lives in that browser tab only.

use anyhow::{Context, Result, bail};
use http::Method;

use agentgate::admin::client::call;
use agentgate::state::StateDir;

use super::block_on;

/// Asks the running instance for a link (for `tenant`'s view if given) and prints it.
pub(crate) fn run(state: &StateDir, tenant: Option<String>, open: bool) -> Result<()> {
    let body = tenant.map(|t| serde_json::json!({ "tenant": t }));
    let answer = block_on(call(
        state,
        Method::POST,
        "/api/v1/dashboard/link",
        body.as_ref(),
    ))??
    .context("no AgentGate is running on this state dir; start it with `agentgate run`")?;
    if !answer.status.is_success() {
        bail!(
            "the instance refused ({}): {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
    }
    let link: serde_json::Value = serde_json::from_slice(&answer.body)?;
    let url = link["url"].as_str().context("the instance sent no url")?;
    outln!("{url}");
    eprintln!("This link signs in once, within 5 minutes. Keep it to yourself.");
    let graphical = std::env::var_os("DISPLAY").is_some()
        || std::env::var_os("WAYLAND_DISPLAY").is_some()
        || cfg!(target_os = "macos");
    if open && graphical {
        let opener = if cfg!(target_os = "macos") {
            "open"
        } else {
            "xdg-open"
        };
        // The browser gets the link as an argument, never through a shell.
        match std::process::Command::new(opener)
            .arg(url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
        {
            Ok(_) => eprintln!("opened it in your browser"),
            Err(e) => eprintln!("could not start {opener} ({e}); open the link yourself"),
        }
    }
    Ok(())
}
