"""WWW-Authenticate parsing and scope strings."""

from __future__ import annotations

import pytest

from suture.image.registry.auth import Challenge, parse_challenges, repository_scope


def test_parse_bearer_challenge() -> None:
    header = ('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
              'scope="repository:library/debian:pull"')
    [challenge] = parse_challenges([header])
    assert challenge.scheme == "bearer"
    assert challenge.realm == "https://auth.docker.io/token"
    assert challenge.service == "registry.docker.io"
    assert challenge.scopes == ("repository:library/debian:pull",)


def test_parse_basic_challenge() -> None:
    assert parse_challenges(['Basic realm="suture-test"']) == [
        Challenge("basic", {"realm": "suture-test"})
    ]


def test_parse_two_challenges_in_one_header() -> None:
    header = 'Basic realm="a", Bearer realm="https://t/token",service="s"'
    challenges = parse_challenges([header])
    assert [c.scheme for c in challenges] == ["basic", "bearer"]
    assert challenges[1].service == "s"


def test_parse_challenges_from_several_headers() -> None:
    challenges = parse_challenges(['Basic realm="a"', 'Bearer realm="b"'])
    assert [c.realm for c in challenges] == ["a", "b"]


@pytest.mark.parametrize(
    ("header", "key", "value"),
    [
        ('Bearer realm="r",scope="repository:a:pull,push"', "scope", "repository:a:pull,push"),
        ('Bearer realm=r, service=s', "service", "s"),
        ('Bearer realm="quote \\" inside"', "realm", 'quote " inside'),
        ('BEARER REALM="x"', "realm", "x"),
        ('Bearer  realm = "spaced" ', "realm", "spaced"),
    ],
)
def test_parse_challenge_parameters(header: str, key: str, value: str) -> None:
    [challenge] = parse_challenges([header])
    assert challenge.params[key] == value


def test_multiple_scopes_split_on_spaces() -> None:
    [challenge] = parse_challenges(['Bearer realm="r",scope="repository:a:pull repository:b:pull"'])
    assert challenge.scopes == ("repository:a:pull", "repository:b:pull")


def test_parse_empty_header() -> None:
    assert parse_challenges([""]) == []


def test_repository_scope_format() -> None:
    assert repository_scope("library/debian", "pull,push") == "repository:library/debian:pull,push"
