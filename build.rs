//! Stamps the binary with the commit it was built from: `BOOTSTORM_COMMIT` is the short hash of
//! `HEAD` (12 digits), with `-dirty` when tracked files differ from it, or `unknown` where there
//! is no git or no repository (a crate tarball).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let commit = commit().unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=BOOTSTORM_COMMIT={commit}");
    println!("cargo:rerun-if-env-changed=BOOTSTORM_COMMIT");
    // Re-run when HEAD moves: a checkout changes .git/HEAD, a commit changes the branch it names.
    // Not on every edit: the `-dirty` mark is as of the last time the script ran.
    for path in ["HEAD", "packed-refs"].into_iter().map(String::from).chain(head_ref()) {
        if let Some(p) = git(&["rev-parse", "--git-path", &path]) {
            let p = PathBuf::from(p);
            if p.exists() {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
    }
}

/// The short hash of HEAD, with `-dirty` when the tracked files differ from it.
fn commit() -> Option<String> {
    // A tarball unpacked inside some other repository must not take that repository's commit.
    let top = PathBuf::from(git(&["rev-parse", "--show-toplevel"])?);
    if top.canonicalize().ok()? != PathBuf::from(env!("CARGO_MANIFEST_DIR")).canonicalize().ok()? {
        return None;
    }
    let hash = git(&["rev-parse", "--short=12", "HEAD"])?;
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{hash}-dirty") } else { hash })
}

/// The branch HEAD points to (`refs/heads/main`), if it points to one.
fn head_ref() -> Option<String> {
    git(&["symbolic-ref", "-q", "HEAD"])
}

/// The trimmed output of a git command run in the crate's directory; `None` if it fails.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
