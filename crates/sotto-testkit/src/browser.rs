//! Headless Chromium for the browser tests: one set of flags (no sandbox as root, no GPU, no
//! first-run or extension noise), so that every test runs the browser the same way.

use std::path::Path;
use std::process::{Command, Stdio};

/// The flags every browser test passes to `chromium`.
pub const HEADLESS_ARGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-extensions",
];

/// `chromium` with [`HEADLESS_ARGS`] and a profile of its own in `profile`, output discarded;
/// the caller adds its flags and the URL. Chromium is required (`.ci/run` installs Debian's).
pub fn chromium(profile: &Path) -> Command {
    let mut c = Command::new("chromium");
    c.args(HEADLESS_ARGS)
        .arg(format!("--user-data-dir={}", profile.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}
