#!/bin/sh
# Installs mailwatch on a Debian server, from a checkout, as root:
#     sudo contrib/install.sh
# What it makes (again on a second run, never overwriting the configuration):
#   the system user and group mailwatch, with no login and /var/lib/mailwatch as home
#   /opt/mailwatch                  a virtual environment with mailwatch[postgres]
#   /etc/mailwatch/mailwatch.toml   config.example.toml, mailwatch:mailwatch 0600 (edit it)
#   /etc/mailwatch/secrets/         for password_file secrets, mailwatch:mailwatch 0700
#   /var/lib/mailwatch/             the SQLite database, mailwatch:mailwatch 0700
#   /etc/systemd/system/mailwatch.service, and the docs in /usr/share/doc/mailwatch
# ROOT=/some/folder installs under that folder instead of / (the test of these steps);
# MAILWATCH_USER=name runs the daemon as an existing user instead; SKIP_VENV=1 leaves
# out /opt/mailwatch.
set -eu

ROOT="${ROOT:-}"
USER_NAME="${MAILWATCH_USER:-mailwatch}"
SOURCE="$(cd "$(dirname "$0")/.." && pwd)"

if ! id "$USER_NAME" >/dev/null 2>&1; then
    useradd --system --user-group --home-dir /var/lib/mailwatch --no-create-home \
        --shell /usr/sbin/nologin "$USER_NAME"
fi
GROUP="$(id -gn "$USER_NAME")"

if [ -z "${SKIP_VENV:-}" ]; then
    python3 -m venv "$ROOT/opt/mailwatch"
    "$ROOT/opt/mailwatch/bin/pip" install --quiet "$SOURCE[postgres]"
fi

install -d -m 0755 "$ROOT/etc/mailwatch"
install -d -m 0700 -o "$USER_NAME" -g "$GROUP" "$ROOT/etc/mailwatch/secrets"
if [ ! -e "$ROOT/etc/mailwatch/mailwatch.toml" ]; then
    install -m 0600 -o "$USER_NAME" -g "$GROUP" "$SOURCE/config.example.toml" \
        "$ROOT/etc/mailwatch/mailwatch.toml"
fi
install -d -m 0700 -o "$USER_NAME" -g "$GROUP" "$ROOT/var/lib/mailwatch"

install -d -m 0755 "$ROOT/etc/systemd/system" "$ROOT/usr/share/doc/mailwatch"
install -m 0644 "$SOURCE/contrib/mailwatch.service" "$ROOT/etc/systemd/system/mailwatch.service"
install -m 0644 "$SOURCE/README.md" "$SOURCE/config.example.toml" "$ROOT/usr/share/doc/mailwatch"
cp -R "$SOURCE/docs" "$ROOT/usr/share/doc/mailwatch/"
chmod -R u=rwX,go=rX "$ROOT/usr/share/doc/mailwatch"

echo "installed; next: edit $ROOT/etc/mailwatch/mailwatch.toml, then mailwatch check (README)"
