#!/usr/bin/env bash
# CI check of the Debian package (root): installs target/debian/sluice_*.deb with dpkg -i,
# checks what it put in place, runs `sluice validate` on the installed config (the config and
# this host: data_dir, ports, locked memory), then purges it again.
set -euo pipefail
cd "$(dirname "$0")/../.."

deb=$(ls -t target/debian/sluice_*.deb | head -n 1)
dpkg -i "$deb"
trap 'dpkg --purge sluice >/dev/null' EXIT

getent passwd sluice >/dev/null || { echo "no sluice user" >&2; exit 1; }
for path in /usr/bin/sluice /etc/sluice/sluice.toml /usr/lib/systemd/system/sluice.service \
    /usr/share/man/man1/sluice.1.gz /usr/share/bash-completion/completions/sluice \
    /usr/share/zsh/vendor-completions/_sluice /usr/share/fish/vendor_completions.d/sluice.fish \
    /usr/share/doc/sluice/operations.md /usr/share/doc/sluice/outputs.md /usr/share/doc/sluice/inputs.md; do
  [ -e "$path" ] || { echo "the package did not install $path" >&2; exit 1; }
done
for dir in /var/lib/sluice /var/log/sluice; do
  [ "$(stat -c %U:%G "$dir")" = sluice:sluice ] || { echo "$dir is not owned by sluice" >&2; exit 1; }
done
dpkg-query -W -f='${Conffiles}\n' sluice | grep -q /etc/sluice/sluice.toml \
  || { echo "/etc/sluice/sluice.toml is not a conffile" >&2; exit 1; }
zcat /usr/share/man/man1/sluice.1.gz | grep -q 'sluice' || { echo "empty man page" >&2; exit 1; }
sluice --version
sluice validate /etc/sluice/sluice.toml
echo "package OK: $deb"
