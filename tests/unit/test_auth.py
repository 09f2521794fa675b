"""API tokens and roles (``router.auth``) and the ``python -m router token`` command."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
from pathlib import Path

import pytest
import yaml

from router import __main__ as cli
from router import auth
from router.errors import PermissionDeniedError, UnauthenticatedError

TOKEN = "rtk_test-token-please-ignore"
DIGEST = hashlib.sha256(TOKEN.encode()).hexdigest()


def _file(*entries: dict[str, str]) -> str:
    return yaml.safe_dump({"tokens": list(entries)})


def test_a_listed_token_names_its_principal() -> None:
    """The digest finds the entry; other strings find nothing."""
    table = auth.TokenTable(
        auth.parse_tokens(_file({"sha256": DIGEST, "tenant": "acme", "role": "helpdesk"}))
    )
    assert table.lookup(TOKEN) == auth.Principal("acme-helpdesk", "acme", "helpdesk")
    assert table.lookup(TOKEN + "x") is None
    assert table.lookup(DIGEST) is None  # the digest itself is no token


def test_every_entry_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """``hmac.compare_digest`` against every entry, even after a match."""
    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    others = [
        {"sha256": auth.digest(f"t{n}"), "tenant": "acme", "role": "viewer"} for n in range(4)
    ]
    table = auth.TokenTable(
        auth.parse_tokens(_file({"sha256": DIGEST, "tenant": "acme", "role": "admin"}, *others))
    )
    assert table.lookup(TOKEN) is not None
    assert len(calls) == 5


def test_json_files_and_names() -> None:
    """JSON works too; ``name`` labels the caller in logs; upper-case hex is accepted."""
    text = json.dumps(
        {"tokens": [{"sha256": DIGEST.upper(), "tenant": "a.b-c", "role": "admin", "name": "ci"}]}
    )
    (entry,) = auth.parse_tokens(text, json_format=True)
    assert entry.sha256 == DIGEST
    assert entry.principal == auth.Principal("ci", "a.b-c", "admin")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tokens: [", "not valid YAML"),
        ("[]", 'one key, "tokens"'),
        ("tokens: {}", 'one key, "tokens"'),
        ("tokens: [5]", r"tokens\[0\]: expected a mapping"),
        (_file({"sha256": TOKEN, "tenant": "acme", "role": "admin"}), "never the token itself"),
        (_file({"sha256": DIGEST, "tenant": "ac me", "role": "admin"}), "tenant: must be"),
        (_file({"sha256": DIGEST, "tenant": "acme", "role": "root"}), "role 'root' is not"),
        (_file({"sha256": DIGEST, "tenant": "acme"}), "role '' is not"),
        (
            _file({"sha256": DIGEST, "tenant": "acme", "role": "admin", "rol": "x"}),
            r"unknown keys \['rol'\]",
        ),
        (
            _file(
                {"sha256": DIGEST, "tenant": "acme", "role": "admin"},
                {"sha256": DIGEST, "tenant": "beta", "role": "admin"},
            ),
            r"tokens\[1\].sha256: listed twice",
        ),
        (
            _file({"sha256": DIGEST, "tenant": "acme", "role": "admin", "name": "a b"}),
            "name must be",
        ),
    ],
)
def test_bad_files_are_refused_with_the_entry(text: str, message: str) -> None:
    """Each mistake names where it is."""
    with pytest.raises(auth.TokensFileError, match=message):
        auth.parse_tokens(text)


@pytest.mark.parametrize(
    ("text", "json_format", "message"),
    [
        (
            f"tokens:\n  - {{sha256: {DIGEST}, tenant: acme, role: viewer, role: admin}}",
            False,
            "line 2: key 'role' is given twice",
        ),
        (f"tokens: []\ntokens:\n  - {{sha256: {DIGEST}}}", False, "key 'tokens' is given twice"),
        ("tokens:\n  - {? [x] : 1}\n", False, r"key \"\['x'\]\" is not a string"),
        (
            json.dumps({"tokens": [{"sha256": DIGEST, "tenant": "acme", "role": "viewer"}]})[:-3]
            + ', "role": "admin"}]}',
            True,
            "key 'role' is given twice",
        ),
    ],
)
def test_a_key_given_twice_is_refused(text: str, json_format: bool, message: str) -> None:
    """A mapping naming a key twice (a merge left during a rotation) is refused: YAML and
    JSON parsers would keep the last value, here making a viewer an admin."""
    with pytest.raises(auth.TokensFileError, match=message):
        auth.parse_tokens(text, json_format=json_format)


def test_reload_keeps_the_old_table_on_error(tmp_path: Path) -> None:
    """A broken file on reload raises and changes nothing; a good one replaces the table."""
    path = tmp_path / "tokens.yaml"
    path.write_text(_file({"sha256": DIGEST, "tenant": "acme", "role": "admin"}))
    table = auth.TokenTable.from_file(path)
    path.write_text("tokens: [")
    with pytest.raises(auth.TokensFileError):
        table.reload()
    assert table.lookup(TOKEN) is not None
    path.write_text(_file({"sha256": auth.digest("new"), "tenant": "acme", "role": "admin"}))
    assert table.reload() == 1
    assert table.lookup(TOKEN) is None
    assert table.lookup("new") is not None


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ((), "missing credentials"),
        ((("x-other", "1"),), "missing credentials"),
        ((("authorization", f"Basic {TOKEN}"),), "must be 'Bearer <token>'"),
        ((("authorization", "Bearer "),), "must be 'Bearer <token>'"),
        ((("authorization", f"Bearer {TOKEN}"), ("authorization", "Bearer b")), "exactly one"),
        ((("authorization", "Bearer " + "a" * 300),), "unknown token"),
        ((("authorization", "Bearer t\u00e9"),), "unknown token"),
    ],
)
def test_malformed_credentials(metadata: tuple[tuple[str, str], ...], message: str) -> None:
    """UNAUTHENTICATED, and the message never contains what was sent."""
    with pytest.raises(UnauthenticatedError, match=message) as err:
        auth.bearer_token(metadata)
    assert TOKEN not in err.value.message


def test_bearer_scheme_is_case_insensitive() -> None:
    """``bearer`` and ``Bearer`` both work."""
    assert auth.bearer_token((("authorization", f"bearer {TOKEN}"),)) == TOKEN


def test_roles() -> None:
    """helpdesk: all routing, no admin; admin: everything; viewer: reads only."""
    routing = {m for m in auth.ROLES["admin"] if "/router.v1.RoutingService/" in m}
    assert len(routing) == 10
    assert auth.ROLES["helpdesk"] == routing
    assert len(auth.ROLES["admin"]) == 22
    assert all("/Get" in m or "/List" in m or m.endswith("/Watch") for m in auth.ROLES["viewer"])
    assert len(auth.ROLES["viewer"]) == 6
    assert auth.ROLES["viewer"] < auth.ROLES["admin"]


def test_permission_denied_names_what_is_missing() -> None:
    """The role needed, or the tenant the token is for."""
    helpdesk = auth.Principal("crm", "acme", "helpdesk")
    with pytest.raises(PermissionDeniedError, match="needs role admin; this token has role hel"):
        auth._authorize("/router.v1.AgentAdminService/CreateAgent", helpdesk, "acme")
    viewer = auth.Principal("board", "acme", "viewer")
    with pytest.raises(PermissionDeniedError, match="needs role helpdesk or admin"):
        auth._authorize("/router.v1.RoutingService/Assign", viewer, "acme")
    with pytest.raises(PermissionDeniedError, match="for tenant 'acme' only, not 'beta'"):
        auth._authorize("/router.v1.RoutingService/Assign", helpdesk, "beta")
    with pytest.raises(PermissionDeniedError, match=r"not '\\x1b\[31m"):
        auth._authorize("/router.v1.RoutingService/Assign", helpdesk, "\x1b[31m")
    auth._authorize("/router.v1.RoutingService/Assign", helpdesk, "acme")  # allowed


def test_minted_tokens_are_fresh_and_long() -> None:
    """256 random bits each time."""
    tokens = {auth.mint() for _ in range(100)}
    assert len(tokens) == 100
    assert all(t.startswith("rtk_") and len(t) == 47 for t in tokens)


def test_token_command_prints_a_token_and_its_line(capsys: pytest.CaptureFixture[str]) -> None:
    """The printed line, put in a tokens file, grants the printed token."""
    assert cli.main(["token", "--tenant", "acme", "--role", "helpdesk", "--name", "crm"]) == 0
    out = capsys.readouterr().out.splitlines()
    token = out[1].strip()
    line = out[3]
    (entry,) = auth.parse_tokens("tokens:\n" + line)
    assert entry.sha256 == auth.digest(token)
    assert entry.principal == auth.Principal("crm", "acme", "helpdesk")
    assert token not in line


def test_token_command_hashes_a_token_from_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--stdin`` prints only the line for a token made elsewhere."""
    monkeypatch.setattr("sys.stdin", io.StringIO(TOKEN + "\n"))
    assert cli.main(["token", "--tenant", "acme", "--role", "viewer", "--stdin"]) == 0
    out = capsys.readouterr().out
    assert TOKEN not in out
    (entry,) = auth.parse_tokens("tokens:\n" + out)
    assert entry.sha256 == DIGEST


@pytest.mark.parametrize(
    "argv",
    [
        ["token", "--tenant", "acme", "--role", "root"],
        ["token", "--tenant", "a b", "--role", "admin"],
        ["token", "--role", "admin"],
    ],
)
def test_token_command_refuses_bad_arguments(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Usage errors exit with status 2 and print no token."""
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    assert "rtk_" not in capsys.readouterr().out


@pytest.mark.parametrize("tenant", ["acme", "2024", "1.5", "yes", "0x1F", "null", "on"])
def test_the_printed_line_reads_back_as_the_tenant_given(tenant: str) -> None:
    """Tenants YAML would read as a number, a boolean or null are quoted in the line the
    ``token`` command prints, so the file grants exactly that tenant."""
    line = auth.entry_line("a-token", tenant, "helpdesk", "crm")
    (entry,) = auth.parse_tokens("tokens:\n" + line + "\n")
    principal = entry.principal
    assert (principal.tenant, principal.role, principal.name) == (tenant, "helpdesk", "crm")
    assert entry.sha256 == auth.digest("a-token")
