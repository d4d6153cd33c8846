#!/usr/bin/env bash
# Builds the Debian package target/debian/sluice_<version>-1_<arch>.deb: the release binary,
# the man page and shell completions generated from the CLI (clap_mangen, clap_complete), the
# systemd unit, /etc/sluice/sluice.toml, and the maintainer scripts that create the `sluice`
# user with /var/lib/sluice and /var/log/sluice. Needs cargo-deb (installed if missing).
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build --release -p engine --bin sluice
bin=target/release/sluice
out=target/release/package
mkdir -p "$out"
"$bin" man | gzip -9n > "$out/sluice.1.gz"
"$bin" completions bash > "$out/sluice.bash"
"$bin" completions zsh > "$out/_sluice"
"$bin" completions fish > "$out/sluice.fish"

if ! command -v cargo-deb >/dev/null 2>&1; then
  cargo install cargo-deb --locked
fi
# Debug info stays in (debug = 1 in the release profile): backtraces name functions.
cargo deb -p engine --no-build --no-strip "$@"
