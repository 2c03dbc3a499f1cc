"""The master key in a real OS keyring: gnome-keyring's Secret Service on a private D-Bus session.

Each byokctl command runs as its own process, as in real use, so the key must come back from
the keyring daemon (not from memory). Skipped only where dbus-run-session or
gnome-keyring-daemon is not installed; CI installs both (Debian: dbus, gnome-keyring).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = [
    pytest.mark.keyring,
    pytest.mark.skipif(
        not (shutil.which("dbus-run-session") and shutil.which("gnome-keyring-daemon")),
        reason="needs dbus-run-session and gnome-keyring-daemon (apt-get install dbus gnome-keyring)",
    ),
]

SECRET = "sk-ant-api03-" + "realKeyringTest0123456789abcdefXYZ"

# Runs inside the D-Bus session: drives byokctl as separate processes and reads the keyring
# through the same SecretService backend, then prints one JSON document.
DRIVER = textwrap.dedent("""
    import json, os, subprocess, sys
    import keyring

    def run(*args, stdin=None):
        p = subprocess.run([sys.executable, "-m", "byokctl", *args], input=stdin,
                           capture_output=True, text=True, timeout=60)
        return {"args": list(args), "code": p.returncode, "stdout": p.stdout, "stderr": p.stderr}

    def entry(name):
        return keyring.get_password("byokctl", name)

    out = {"backend": type(keyring.get_keyring()).__name__, "steps": {}}
    s = out["steps"]
    s["init"] = run("init", "--json")
    vid = json.loads(s["init"]["stdout"])["vault_id"] if s["init"]["code"] == 0 else "?"
    user = "vault-" + vid
    out["entry_after_init"] = entry(user)
    s["org"] = run("org", "create", "acme", "--plan", "growth")
    s["key"] = run("key", "add", "acme", "--provider", "anthropic", "--from-stdin", "--json",
                   stdin=os.environ["TEST_SECRET"] + "\\n")
    s["check"] = run("vault", "check", "--json")
    s["rotate"] = run("vault", "rotate-master", "--json")
    out["entry_after_rotate"] = entry(user)
    out["next_after_rotate"] = entry(user + ".next")
    s["check2"] = run("vault", "check", "--json")
    s["rekey"] = run("vault", "rekey", "--json")
    keyring.delete_password("byokctl", user)
    s["locked"] = run("org", "create", "beta")
    s["list_locked"] = run("org", "list", "--json")
    print(json.dumps(out))
""")


@pytest.mark.slow  # half a second or more: CI runs it, the quick loop does not
def in_keyring_session(tmp_path: Path, driver_text: str, **env_extra: str) -> dict:
    """Run `driver_text` (a Python script printing one JSON line last) in its own D-Bus session
    with an unlocked gnome-keyring, a fresh HOME and no master key in the environment; its
    JSON."""
    home = tmp_path / "home"
    home.mkdir()
    driver = tmp_path / "driver.py"
    driver.write_text(driver_text)
    env = {k: v for k, v in os.environ.items()
           if k not in ("BYOKCTL_MASTER_KEY", "BYOKCTL_DB", "DBUS_SESSION_BUS_ADDRESS")}
    env.update(HOME=str(home), BYOKCTL_HOME=str(tmp_path / "data"), TEST_SECRET=SECRET,
               PYTHON_KEYRING_BACKEND="keyring.backends.SecretService.Keyring",
               XDG_RUNTIME_DIR=str(tmp_path / "run"), PYTHONPATH=str(REPO), **env_extra)
    (tmp_path / "run").mkdir(mode=0o700)
    script = ("echo -n pw | gnome-keyring-daemon --unlock --components=secrets >/dev/null; "
              f"exec {sys.executable} {driver}")
    proc = subprocess.run(["dbus-run-session", "--", "sh", "-c", script], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_init_then_commands_use_the_real_keyring(tmp_path: Path) -> None:
    out = in_keyring_session(tmp_path, DRIVER)
    steps = out["steps"]
    assert out["backend"] == "Keyring"  # keyring.backends.SecretService.Keyring
    for name in ("init", "org", "key", "check", "rotate", "check2", "rekey"):
        assert steps[name]["code"] == 0, (name, steps[name]["stderr"])

    init = json.loads(steps["init"]["stdout"])
    assert init["master_source"] == "keyring"
    first = out["entry_after_init"]
    assert first and len(base64.b64decode(first)) == 32
    assert json.loads(steps["check"]["stdout"])["keys_checked"] == 1

    rotated = out["entry_after_rotate"]
    assert rotated and rotated != first and out["next_after_rotate"] is None
    assert json.loads(steps["rotate"]["stdout"])["master_key"] is None
    assert json.loads(steps["check2"]["stdout"])["ok"] is True
    assert json.loads(steps["rekey"]["stdout"])["reencrypted"] == 1

    # Without its keyring entry the vault is locked, and says how to fix it; reads still work.
    assert steps["locked"]["code"] == 10
    assert "BYOKCTL_MASTER_KEY" in steps["locked"]["stderr"]
    assert [o["slug"] for o in json.loads(steps["list_locked"]["stdout"])] == ["acme"]

    # Neither master key nor secret is ever in the vault file or any output.
    blob = b"".join(p.read_bytes() for p in (tmp_path / "data").iterdir())
    outputs = json.dumps(steps)
    for value in (first, rotated):
        assert value.encode() not in blob and base64.b64decode(value) not in blob
        assert value not in outputs
    assert SECRET.encode() not in blob and SECRET not in outputs


# The master key moved from the real keyring to Vault transit and back (a real OpenBao dev
# server, tests/openbao.py): each step a separate process, the keyring read through D-Bus.
KMS_DRIVER = textwrap.dedent("""
    import json, os, subprocess, sys
    import keyring

    def run(*args, stdin=None, token=True):
        env = dict(os.environ)
        if not token:
            env.pop("VAULT_TOKEN")
        p = subprocess.run([sys.executable, "-m", "byokctl", *args], input=stdin, env=env,
                           capture_output=True, text=True, timeout=60)
        return {"args": list(args), "code": p.returncode, "stdout": p.stdout, "stderr": p.stderr}

    s, out = {}, {}
    s["init"] = run("init", "--json")
    user = "vault-" + json.loads(s["init"]["stdout"])["vault_id"]
    s["key"] = run("key", "add", "--platform", "--provider", "anthropic", "--from-stdin",
                   stdin=os.environ["TEST_SECRET"] + "\\n")
    s["to_kms"] = run("vault", "rotate-master", "--kms", os.environ["TEST_REF"], "--json")
    out["entry_after_kms"] = keyring.get_password("byokctl", user)
    s["check_kms"] = run("vault", "check", "--json")
    s["no_token"] = run("vault", "check", token=False)
    s["to_keyring"] = run("vault", "rotate-master", "--keyring", "--json")
    out["entry_after_keyring"] = keyring.get_password("byokctl", user)
    s["check_keyring"] = run("vault", "check", "--json", token=False)
    s["status"] = run("vault", "status", "--json", token=False)
    out["steps"] = s
    print(json.dumps(out))
""")


@pytest.mark.slow
def test_moving_between_the_real_keyring_and_transit(tmp_path: Path, bao_server) -> None:
    out = in_keyring_session(tmp_path, KMS_DRIVER,
                             TEST_REF=f"vault-transit:transit/{bao_server.new_key()}",
                             **bao_server.env())
    steps = out["steps"]
    for name in ("init", "key", "to_kms", "check_kms", "to_keyring", "check_keyring", "status"):
        assert steps[name]["code"] == 0, (name, steps[name]["stderr"])
    assert out["entry_after_kms"] is None  # moved: the keyring's old key is gone
    assert steps["no_token"]["code"] == 10 and "VAULT_TOKEN" in steps["no_token"]["stderr"]
    assert json.loads(steps["check_kms"]["stdout"])["keys_checked"] == 1
    entry = out["entry_after_keyring"]
    assert entry and len(base64.b64decode(entry)) == 32
    assert json.loads(steps["check_keyring"]["stdout"])["ok"] is True
    status = json.loads(steps["status"]["stdout"])
    assert status["master_source"] == "keyring" and status["master_reference"] is None
