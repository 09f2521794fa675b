"""Security settings are validated when ``Settings`` is built, with the variable's name."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from router import __main__ as router_main
from router import auth
from router.server import server_options
from router.settings import Settings, SettingsError, descriptions, env_name
from router.v1 import routing_pb2


def _self_signed(directory: Path, name: str) -> tuple[str, str]:
    """A throw-away self-signed certificate and its key (``openssl``)."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out", str(cert),
            "-days", "2", "-subj", f"/CN={name}",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    return str(cert), str(key)


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A certificate and its key, and another certificate's key."""
    if shutil.which("openssl") is None:
        pytest.fail("the TLS settings tests need the openssl command", pytrace=False)
    directory = tmp_path_factory.mktemp("pem")
    cert, key = _self_signed(directory, "server")
    _, other = _self_signed(directory, "other")
    return {"cert": cert, "key": key, "other_key": other}


@pytest.mark.parametrize("seconds", [3599, 90 * 86400 + 1])
def test_record_retention_outside_an_hour_to_90_days_is_refused(seconds: int) -> None:
    """``ROUTER_RECORD_RETENTION_S`` names itself when out of range; the bounds pass."""
    with pytest.raises(SettingsError, match="ROUTER_RECORD_RETENTION_S"):
        Settings(record_retention_s=seconds)
    assert Settings(record_retention_s=3600).record_retention_s == 3600
    assert Settings(record_retention_s=90 * 86400).record_retention_s == 90 * 86400


def test_a_weak_but_matching_pair_is_left_to_grpc(tmp_path: Path) -> None:
    """The pair check looks at whether the key is the certificate's, not at its strength:
    a 1024-bit RSA pair that gRPC serves is not refused by the check (OpenSSL's default
    security level would)."""
    cert, key = tmp_path / "weak.pem", tmp_path / "weak.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:1024", "-nodes", "-keyout", str(key),
            "-out", str(cert), "-days", "2", "-subj", "/CN=weak",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    assert Settings(tls_cert=str(cert), tls_key=str(key)).tls


def test_a_key_that_is_not_the_certificates_is_refused_naming_both(pem: dict[str, str]) -> None:
    """A key of another certificate (a renewal half done) stops start-up naming both
    variables, where gRPC would refuse only when listening, naming the address."""
    with pytest.raises(SettingsError, match="ROUTER_TLS_CERT and ROUTER_TLS_KEY: the key is not"):
        Settings(tls_cert=pem["cert"], tls_key=pem["other_key"])


def test_tls_needs_both_cert_and_key(pem: dict[str, str]) -> None:
    """Either alone is refused; both is TLS; neither is plaintext."""
    with pytest.raises(SettingsError, match="ROUTER_TLS_CERT and ROUTER_TLS_KEY: set both"):
        Settings(tls_cert=pem["cert"])
    with pytest.raises(SettingsError, match="set both"):
        Settings(tls_key=pem["key"])
    assert Settings(tls_cert=pem["cert"], tls_key=pem["key"]).tls
    assert not Settings().tls


def test_client_ca_needs_tls(pem: dict[str, str]) -> None:
    """Mutual TLS without a server certificate makes no sense."""
    with pytest.raises(SettingsError, match="ROUTER_TLS_CLIENT_CA: mutual TLS needs"):
        Settings(tls_client_ca=pem["cert"])
    Settings(tls_cert=pem["cert"], tls_key=pem["key"], tls_client_ca=pem["cert"])


def test_tls_files_must_be_readable_pem(pem: dict[str, str], tmp_path: Path) -> None:
    """A missing file or one without the expected PEM block names the variable."""
    with pytest.raises(SettingsError, match="ROUTER_TLS_CERT: cannot read"):
        Settings(tls_cert=str(tmp_path / "nope.pem"), tls_key=pem["key"])
    with pytest.raises(SettingsError, match=r"ROUTER_TLS_KEY: .* holds no PEM"):
        Settings(tls_cert=pem["cert"], tls_key=pem["cert"])
    with pytest.raises(SettingsError, match=r"ROUTER_TLS_CLIENT_CA: .* holds no PEM"):
        Settings(tls_cert=pem["cert"], tls_key=pem["key"], tls_client_ca=pem["key"])


def test_tokens_file_is_parsed_up_front(tmp_path: Path) -> None:
    """A broken tokens file stops start-up with the entry that is wrong."""
    path = tmp_path / "tokens.yaml"
    path.write_text("tokens:\n  - {sha256: abc, tenant: acme, role: admin}\n")
    with pytest.raises(SettingsError, match=r"ROUTER_TOKENS_FILE: tokens\[0\].sha256"):
        Settings(tokens_file=str(path))
    with pytest.raises(SettingsError, match="ROUTER_TOKENS_FILE: cannot read"):
        Settings(tokens_file=str(tmp_path / "missing.yaml"))
    path.write_text(f"tokens:\n{auth.entry_line('t', 'acme', 'admin')}\n")
    assert Settings(tokens_file=str(path)).tokens_file == str(path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"admin_port": 70000}, "ROUTER_ADMIN_PORT: 70000 is not a port"),
        ({"port": 6000, "admin_port": 6000}, "ROUTER_ADMIN_PORT: 6000 is also ROUTER_PORT"),
        ({"port": 6000, "metrics_port": 6000}, "ROUTER_METRICS_PORT: 6000 is also a gRPC"),
        ({"admin_port": 6001, "metrics_port": 6001}, "ROUTER_METRICS_PORT: 6001 is also a gRPC"),
        ({"admin_host": ""}, "ROUTER_ADMIN_HOST"),
        ({"rate_limit": -1}, "ROUTER_RATE_LIMIT"),
        ({"rate_limit": 1e-300}, "ROUTER_RATE_LIMIT"),  # a retry-after past any Duration
        ({"rate_burst": -1}, "ROUTER_RATE_BURST"),
        ({"keepalive_time_s": 0}, "ROUTER_KEEPALIVE_TIME_S"),
        ({"min_ping_interval_s": -1}, "ROUTER_MIN_PING_INTERVAL_S"),
        ({"max_connection_idle_s": -1}, "ROUTER_MAX_CONNECTION_IDLE_S"),
        ({"max_concurrent_streams": 0}, "ROUTER_MAX_CONCURRENT_STREAMS"),
        ({"max_ping_strikes": -1}, "ROUTER_MAX_PING_STRIKES"),
        ({"concurrency": -1}, "ROUTER_CONCURRENCY: -1 is not in 0..1024"),
    ],
)
def test_out_of_range_values(kwargs: dict[str, object], message: str) -> None:
    """Each limit names its variable."""
    with pytest.raises(SettingsError, match=message):
        Settings(**kwargs)  # type: ignore[arg-type]  # values of the right types


def test_from_env_reads_the_security_variables(pem: dict[str, str]) -> None:
    """Every new field has its ROUTER_* variable, booleans included."""
    settings = Settings.from_env(
        {
            "ROUTER_TLS_CERT": pem["cert"],
            "ROUTER_TLS_KEY": pem["key"],
            "ROUTER_ADMIN_PORT": "50052",
            "ROUTER_ADMIN_HOST": "::1",
            "ROUTER_RATE_LIMIT": "12.5",
            "ROUTER_RATE_BURST": "40",
            "ROUTER_KEEPALIVE_PERMIT_WITHOUT_CALLS": "0",
            "ROUTER_MAX_CONNECTION_AGE_S": "1800",
        }
    )
    assert settings.tls
    assert (settings.admin_port, settings.admin_host) == (50052, "::1")
    assert (settings.rate_limit, settings.rate_burst) == (12.5, 40)
    assert settings.keepalive_permit_without_calls is False
    assert settings.max_connection_age_s == 1800
    with pytest.raises(SettingsError, match="ROUTER_KEEPALIVE_PERMIT_WITHOUT_CALLS: 'maybe'"):
        Settings.from_env({"ROUTER_KEEPALIVE_PERMIT_WITHOUT_CALLS": "maybe"})


def test_server_options_carry_the_keepalive_settings() -> None:
    """Defaults in milliseconds; idle/age options only when set."""
    options = dict(server_options(Settings()))
    assert options["grpc.keepalive_time_ms"] == 60_000
    assert options["grpc.keepalive_timeout_ms"] == 20_000
    assert options["grpc.keepalive_permit_without_calls"] == 1
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 10_000
    assert options["grpc.http2.max_ping_strikes"] == 2
    assert options["grpc.http2.max_pings_without_data"] == 0
    assert options["grpc.max_concurrent_streams"] == 100
    assert options["grpc.max_connection_idle_ms"] == 600_000
    assert "grpc.max_connection_age_ms" not in options
    aged = dict(server_options(Settings(max_connection_age_s=90, max_connection_idle_s=0)))
    assert aged["grpc.max_connection_age_ms"] == 90_000
    assert aged["grpc.max_connection_age_grace_ms"] == 30_000
    assert "grpc.max_connection_idle_ms" not in aged


def test_readme_configuration_table_names_every_setting() -> None:
    """Operators read the README's table: each variable ``Settings.from_env`` reads is in it,
    and it names no variable the service does not read."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`((?:ROUTER|REDIS)_[A-Z0-9_]+)`", table))
    read = {env_name(f.name) for f in dataclasses.fields(Settings)}
    assert read - documented == set(), "settings missing from the README table"
    assert documented - read == set(), "README names variables the service does not read"


def test_dispatch_lease_is_bounded() -> None:
    """A lease under a second or over ten minutes is refused by name; the env sets it."""
    for bad in ("0.5", "601"):
        with pytest.raises(SettingsError, match="ROUTER_DISPATCH_LEASE_S"):
            Settings.from_env({"ROUTER_DISPATCH_LEASE_S": bad})
    assert Settings.from_env({"ROUTER_DISPATCH_LEASE_S": "3"}).dispatch_lease_s == 3.0


def test_every_setting_is_explained_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m router --help`` names each variable with its default and what it means
    (from the field's docstring, without markup)."""
    meaning = descriptions()
    assert set(meaning) == {f.name for f in dataclasses.fields(Settings)}
    assert all(text and "``" not in text for text in meaning.values())
    with pytest.raises(SystemExit):
        router_main.main(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for f in dataclasses.fields(Settings):
        assert f"{env_name(f.name)} (default {router_main.shown_default(f.default)})" in shown
    assert meaning["concurrency"][:40] in shown


def test_help_shows_defaults_as_they_are_typed(capsys: pytest.CaptureFixture[str]) -> None:
    """Defaults read as a value of the variable, never a Python repr (None, False, '')."""
    with pytest.raises(SystemExit):
        router_main.main(["--help"])
    shown = capsys.readouterr().out
    for line in (
        "ROUTER_HOST (default 127.0.0.1)",
        "REDIS_URL (default empty)",
        "ROUTER_REDIS_TIMEOUT_S (default 2)",
        "ROUTER_LOG_LEVEL (default info)",
        "ROUTER_LOG_JSON (default auto)",
        "ROUTER_TRACING (default 0)",
        "ROUTER_KEEPALIVE_PERMIT_WITHOUT_CALLS (default 1)",
    ):
        assert f"  {line}\n" in shown, line
    assert not re.search(r"\(default (None|True|False|''|'[^']*')\)", shown)


def test_help_defaults_agree_with_the_readme_table() -> None:
    """The README's configuration table and ``--help`` give each variable the same default
    (``2.0`` there is ``2`` here)."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    defaults = {f.name: router_main.shown_default(f.default) for f in dataclasses.fields(Settings)}
    checked = set()
    for row in re.findall(r"^\| (`(?:ROUTER|REDIS)_.*)$", table, re.MULTILINE):
        names, default = row.split(" | ")[:2]
        documented = default.split(" (")[0].strip("`")
        for name in re.findall(r"`([A-Z0-9_]+)`", names):
            field = "redis_url" if name == "REDIS_URL" else name.removeprefix("ROUTER_").lower()
            ours = defaults[field]
            if re.fullmatch(r"[0-9]+(\.[0-9]+)?", ours):
                assert float(documented) == float(ours), name
            else:
                assert documented == ours, name
            checked.add(field)
    assert checked == set(defaults)


def test_help_says_what_each_setting_means_as_written() -> None:
    """Descriptions keep their docstring's text (``debug`` stays lower case, a value is not
    a sentence's first word to capitalise) and name other settings by their variables."""
    meaning = descriptions()
    assert meaning["log_level"].endswith("debug, info, warning or error, in any case.")
    assert meaning["redis_url"].startswith("The shared Redis. Empty: ")
    fields = {f.name for f in dataclasses.fields(Settings) if "_" in f.name}
    for name, text in meaning.items():
        named = set(re.findall(r"\b[a-z0-9]+(?:_[a-z0-9]+)+\b", text)) & fields
        assert not named, f"{name} names fields {named} instead of their variables"
    assert "ROUTER_TLS_KEY" in meaning["tls_cert"]
    assert "ROUTER_RATE_LIMIT" in meaning["rate_burst"]
    assert "ROUTER_MAX_CONNECTION_AGE_S" in meaning["max_connection_age_grace_s"]


def test_help_lists_every_routing_rpc(capsys: pytest.CaptureFixture[str]) -> None:
    """The description names RoutingService's RPCs as the contract has them, all of them."""
    methods = routing_pb2.DESCRIPTOR.services_by_name["RoutingService"].methods
    with pytest.raises(SystemExit):
        router_main.main(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    listed = ", ".join(m.name for m in methods)
    assert f"router.v1.RoutingService ({listed})" in shown


@pytest.mark.parametrize(
    ("written", "level"),
    [("debug", "debug"), ("Debug", "debug"), ("DEBUG", "debug"), ("Warning", "warning")],
)
def test_log_level_is_read_in_any_case(written: str, level: str) -> None:
    """``ROUTER_LOG_LEVEL=Debug`` (or DEBUG) means debug: the level the logging set-up gets
    is in lower case, from the environment or built directly."""
    assert Settings.from_env({"ROUTER_LOG_LEVEL": written}).log_level == level
    assert Settings(log_level=written).log_level == level


def test_an_unknown_log_level_is_refused_as_written() -> None:
    """The error quotes the value as it was set and lists the levels there are."""
    with pytest.raises(SettingsError, match=r"ROUTER_LOG_LEVEL: 'Verbose' is not a log level \("):
        Settings.from_env({"ROUTER_LOG_LEVEL": "Verbose"})
