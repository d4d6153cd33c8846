//! Records the commit the binary is built from (`sluice_build_info`, `sluice --version`).
//! `SLUICE_COMMIT` in the environment wins (a package built outside a git checkout).

fn main() {
    println!("cargo:rerun-if-env-changed=SLUICE_COMMIT");
    println!("cargo:rerun-if-changed=../.git/HEAD");
    println!("cargo:rerun-if-changed=../.git/logs/HEAD");
    let commit = std::env::var("SLUICE_COMMIT").ok().or_else(git_commit);
    println!(
        "cargo:rustc-env=SLUICE_COMMIT={}",
        commit.as_deref().unwrap_or("unknown")
    );
}

fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let commit = text.trim();
    (out.status.success() && !commit.is_empty()).then(|| commit.to_string())
}
