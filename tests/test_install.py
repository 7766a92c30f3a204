"""The README's install steps, as `contrib/install.sh` runs them, in a scratch root: all but
the virtual environment (the suite has one) and systemd itself."""

from __future__ import annotations

import os
import pwd
import re
import subprocess
from pathlib import Path

from mailwatch.config import load_settings

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "contrib" / "install.sh"


def run_user() -> pwd.struct_passwd:
    """An existing user for the daemon (root cannot stand in: it owns everything anyway)."""
    return pwd.getpwnam("nobody") if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())


def install(root: Path, user: str) -> None:
    env = {**os.environ, "ROOT": str(root), "MAILWATCH_USER": user, "SKIP_VENV": "1"}
    subprocess.run(["sh", str(INSTALL)], env=env, check=True, capture_output=True, timeout=60)


def owner_and_mode(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_uid, stat.st_mode & 0o777


def test_install_sh_makes_the_private_folders_the_unit_and_its_documentation_name(tmp_path):
    user = run_user()

    install(tmp_path, user.pw_name)

    config = tmp_path / "etc/mailwatch/mailwatch.toml"
    assert owner_and_mode(config) == (user.pw_uid, 0o600)
    assert owner_and_mode(tmp_path / "etc/mailwatch/secrets") == (user.pw_uid, 0o700)
    assert owner_and_mode(tmp_path / "var/lib/mailwatch") == (user.pw_uid, 0o700)
    settings = load_settings(config)
    assert settings.database_url == "sqlite:////var/lib/mailwatch/mailwatch.db"
    unit = (tmp_path / "etc/systemd/system/mailwatch.service").read_text()
    (documentation,) = re.findall(r"^Documentation=file://(\S+)$", unit, re.MULTILINE)
    assert (tmp_path / documentation.lstrip("/")).is_file()
    assert "--config /etc/mailwatch/mailwatch.toml" in unit
    assert "ReadWritePaths=/var/lib/mailwatch" in unit
    assert not re.search(r"^LoadCredential=", unit, re.MULTILINE)  # a missing file stops it


def test_install_sh_run_again_keeps_the_edited_configuration(tmp_path):
    user = run_user()
    install(tmp_path, user.pw_name)
    config = tmp_path / "etc/mailwatch/mailwatch.toml"
    config.write_text(config.read_text().replace('name = "Rouge"', 'name = "Rouge & Co"'))

    install(tmp_path, user.pw_name)

    assert load_settings(config).agency_name == "Rouge & Co"


def test_the_readme_installs_with_install_sh_and_the_example_folders_default_as_the_code():
    readme = (REPO / "README.md").read_text()
    steps = readme[readme.index("## Install and run it for real") :]
    assert "contrib/install.sh" in steps.split("```")[1]
    example = " ".join((REPO / "config.example.toml").read_text().replace("#", "").split())
    default = "every folder but Trash and Drafts"
    assert default in example and default in " ".join(readme.split())
