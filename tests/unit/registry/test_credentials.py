"""Credential lookup from flags, auth files, docker config and credential helpers."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from suture.errors import AuthError
from suture.image.registry.credentials import (
    Credentials,
    CredentialSources,
    find_credentials,
)

SECRET = "s3cr3t-value"


def _auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def _write_config(directory: Path, document: dict[str, object]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(document), encoding="utf-8")
    return directory


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Keep the developer's own credentials out of every test.
    for name in ("DOCKER_CONFIG", "REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def _helper(bin_dir: Path, name: str, script: str) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / f"docker-credential-{name}"
    path.write_text("#!/bin/sh\n" + script, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_flags_win(tmp_path: Path) -> None:
    config = _write_config(tmp_path / "d", {"auths": {"r.io": {"auth": _auth("a", "b")}}})
    sources = CredentialSources("flag-user", "flag-pass", docker_config=config)
    credentials = find_credentials("r.io", "x", sources)
    assert (credentials.username, credentials.password) == ("flag-user", "flag-pass")


def test_auths_base64(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(_write_config(
        tmp_path / "d", {"auths": {"127.0.0.1:5000": {"auth": _auth("user", "pa:ss")}}})))
    credentials = find_credentials("127.0.0.1:5000", "x", CredentialSources())
    assert credentials.username == "user"
    assert credentials.password == "pa:ss"


def test_auths_username_password_and_scheme_key(tmp_path: Path) -> None:
    config = _write_config(tmp_path / "d", {
        "auths": {"https://r.io": {"username": "u", "password": "p"}}})
    credentials = find_credentials("r.io", "x", CredentialSources(docker_config=config))
    assert (credentials.username, credentials.password) == ("u", "p")


def test_docker_hub_legacy_key(tmp_path: Path) -> None:
    config = _write_config(tmp_path / "d", {
        "auths": {"https://index.docker.io/v1/": {"auth": _auth("hub", "pw")}}})
    credentials = find_credentials("docker.io", "library/debian",
                                   CredentialSources(docker_config=config))
    assert credentials.username == "hub"


def test_identity_token(tmp_path: Path) -> None:
    config = _write_config(tmp_path / "d", {
        "auths": {"r.io": {"auth": _auth("u", ""), "identitytoken": "refresh"}}})
    credentials = find_credentials("r.io", "x", CredentialSources(docker_config=config))
    assert credentials.identity_token == "refresh"


def test_no_entry_gives_empty_credentials(tmp_path: Path) -> None:
    config = _write_config(tmp_path / "d", {"auths": {"other.io": {"auth": _auth("u", "p")}}})
    assert find_credentials("r.io", "x", CredentialSources(docker_config=config)).empty


def test_missing_config_gives_empty_credentials() -> None:
    assert find_credentials("r.io", "x", CredentialSources()).empty


def test_home_docker_config(tmp_path: Path) -> None:
    _write_config(tmp_path / "home" / ".docker", {"auths": {"r.io": {"auth": _auth("h", "p")}}})
    assert find_credentials("r.io", "x", CredentialSources()).username == "h"


def test_longest_namespace_key_wins(tmp_path: Path) -> None:
    config = _write_config(tmp_path / "d", {"auths": {
        "r.io": {"auth": _auth("registry-wide", "p")},
        "r.io/team": {"auth": _auth("team", "p")},
        "r.io/other": {"auth": _auth("other", "p")},
    }})
    sources = CredentialSources(docker_config=config)
    assert find_credentials("r.io", "team/app", sources).username == "team"
    assert find_credentials("r.io", "solo/app", sources).username == "registry-wide"


def test_registry_auth_file_before_docker_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth_file = tmp_path / "auth.json"
    auth_file.write_text(json.dumps({"auths": {"r.io": {"auth": _auth("podman", "p")}}}))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth_file))
    monkeypatch.setenv("DOCKER_CONFIG", str(_write_config(
        tmp_path / "d", {"auths": {"r.io": {"auth": _auth("docker", "p")}}})))
    assert find_credentials("r.io", "x", CredentialSources()).username == "podman"


def test_xdg_runtime_auth_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = tmp_path / "run"
    (runtime / "containers").mkdir(parents=True)
    (runtime / "containers" / "auth.json").write_text(
        json.dumps({"auths": {"r.io": {"auth": _auth("xdg", "p")}}}))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert find_credentials("r.io", "x", CredentialSources()).username == "xdg"


def test_xdg_config_auth_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = tmp_path / "run"
    (runtime / "containers").mkdir(parents=True)
    (runtime / "containers" / "auth.json").write_text(json.dumps({"auths": {}}))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    config_auth = tmp_path / "home" / ".config" / "containers" / "auth.json"
    config_auth.parent.mkdir(parents=True)
    config_auth.write_text(json.dumps({"auths": {"r.io": {"auth": _auth("config", "p")}}}))
    assert find_credentials("r.io", "x", CredentialSources()).username == "config"


def test_auth_file_without_entry_falls_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth_file = tmp_path / "auth.json"
    auth_file.write_text(json.dumps({"auths": {}}))
    config = _write_config(tmp_path / "d", {"auths": {"r.io": {"auth": _auth("docker", "p")}}})
    sources = CredentialSources(docker_config=config, auth_file=auth_file)
    assert find_credentials("r.io", "x", sources).username == "docker"


HELPER_SCRIPT = f"""read server
echo "$server" >> "$(dirname "$0")/requests.log"
if [ "$1" != get ]; then exit 2; fi
case "$server" in
  r.io) printf '{{"ServerURL":"r.io","Username":"helper-user","Secret":"{SECRET}"}}' ;;
  token.io) printf '{{"ServerURL":"token.io","Username":"<token>","Secret":"id-token"}}' ;;
  https://index.docker.io/v1/) printf '{{"Username":"hub-user","Secret":"x"}}' ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
"""


@pytest.fixture
def helper_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    _helper(bin_dir, "suturetest", HELPER_SCRIPT)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def test_cred_helper_for_registry(tmp_path: Path, helper_path: Path) -> None:
    config = _write_config(tmp_path / "d", {
        "credHelpers": {"r.io": "suturetest"},
        "auths": {"r.io": {"auth": _auth("ignored", "p")}},
    })
    credentials = find_credentials("r.io", "x", CredentialSources(docker_config=config))
    assert credentials.username == "helper-user"
    assert credentials.password == SECRET
    assert (helper_path / "requests.log").read_text() == "r.io\n"


def test_cred_helper_token_username_is_identity_token(tmp_path: Path, helper_path: Path) -> None:
    config = _write_config(tmp_path / "d", {"credHelpers": {"token.io": "suturetest"}})
    credentials = find_credentials("token.io", "x", CredentialSources(docker_config=config))
    assert credentials.identity_token == "id-token"
    assert credentials.username == ""


def test_creds_store_gets_docker_hub_url(tmp_path: Path, helper_path: Path) -> None:
    config = _write_config(tmp_path / "d", {"credsStore": "suturetest"})
    credentials = find_credentials("docker.io", "library/debian",
                                   CredentialSources(docker_config=config))
    assert credentials.username == "hub-user"
    assert (helper_path / "requests.log").read_text() == "https://index.docker.io/v1/\n"


def test_creds_store_without_entry_falls_back_to_auths(tmp_path: Path, helper_path: Path) -> None:
    config = _write_config(tmp_path / "d", {
        "credsStore": "suturetest", "auths": {"other.io": {"auth": _auth("file", "p")}}})
    credentials = find_credentials("other.io", "x", CredentialSources(docker_config=config))
    assert credentials.username == "file"


def test_missing_helper_is_an_auth_error(tmp_path: Path) -> None:
    config = _write_config(tmp_path / "d", {"credHelpers": {"r.io": "absent-helper"}})
    with pytest.raises(AuthError, match="docker-credential-absent-helper"):
        find_credentials("r.io", "x", CredentialSources(docker_config=config))


def test_failing_helper_error_has_no_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    _helper(bin_dir, "leaky", f"echo '{SECRET}'; exit 3\n")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    config = _write_config(tmp_path / "d", {"credHelpers": {"r.io": "leaky"}})
    with pytest.raises(AuthError) as caught:
        find_credentials("r.io", "x", CredentialSources(docker_config=config))
    assert "exit status 3" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_invalid_json_error_hides_content(tmp_path: Path) -> None:
    directory = tmp_path / "d"
    directory.mkdir()
    (directory / "config.json").write_text('{"auths": {"r.io": {"auth": "' + SECRET + '"')
    with pytest.raises(AuthError) as caught:
        find_credentials("r.io", "x", CredentialSources(docker_config=directory))
    assert "not valid JSON" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_invalid_base64_auth(tmp_path: Path) -> None:
    config = _write_config(tmp_path / "d", {"auths": {"r.io": {"auth": "!!" + SECRET}}})
    with pytest.raises(AuthError) as caught:
        find_credentials("r.io", "x", CredentialSources(docker_config=config))
    assert SECRET not in str(caught.value)


def test_repr_hides_secrets() -> None:
    text = repr(Credentials("user", SECRET, "token-" + SECRET))
    assert "user" in text
    assert SECRET not in text
