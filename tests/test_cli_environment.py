"""Every option may come from `FHIR_ADAPTER_<NAME>`, checked as the flag is, blamed on the variable."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from fhir_adapter.cli import build_parser, main, parse
from fhir_adapter.cli.options import OptionError

from .conftest import CASES

CLEAN = str(CASES / "ex1-hcc-ct.json")
NOT_OPTIONS = (argparse._HelpAction, argparse._VersionAction)


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every command and sub-command that runs something, with the words that choose it."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs and path:
        yield path, parser
    for sub in subs:
        for name, child in sub.choices.items():
            yield from _commands(child, (*path, name))


def _options() -> list[tuple[tuple[str, ...], argparse.ArgumentParser, argparse.Action]]:
    return [
        (path, parser, action)
        for path, parser in _commands(build_parser())
        for action in parser._actions
        if action.option_strings and not isinstance(action, NOT_OPTIONS)
    ]


def _argv(path: tuple[str, ...], parser: argparse.ArgumentParser) -> list[str]:
    positionals = [a for a in parser._actions if not a.option_strings and a.nargs != 0]
    return [*path, *["x" for a in positionals if not isinstance(a, argparse._SubParsersAction)]]


def _sample(action: argparse.Action) -> tuple[str, Any]:
    """A value for the variable, and what the option must then hold."""
    if isinstance(action, argparse._StoreTrueAction):
        return "on", True
    if isinstance(action, argparse._AppendAction):
        return "a, b", ["a", "b"]
    if action.choices is not None:
        choice = list(action.choices)[-1]
        return str(choice), choice
    if callable(action.type):  # a number, or a FHIR instant for --since
        for raw in ("7", "2026-01-01T00:00:00Z"):
            try:
                return raw, action.type(raw)
            except argparse.ArgumentTypeError:
                continue
    return "some-value", "some-value"


def test_every_option_of_every_command_is_counted() -> None:
    """The enumeration below sees every command (a new command cannot hide from it)."""
    commands = {" ".join(path) for path, _ in _commands(build_parser())}
    assert {"evaluate", "run", "export", "serve", "feedback", "synth"} <= commands
    assert {"fixtures list", "fixtures write", "fixtures load", "tables import"} <= commands
    assert len(_options()) > 60


@pytest.mark.parametrize(
    ("path", "parser", "action"),
    _options(),
    ids=[f"{' '.join(p)} {a.option_strings[0]}" for p, _, a in _options()],
)
def test_every_option_comes_from_the_environment(
    path: tuple[str, ...],
    parser: argparse.ArgumentParser,
    action: argparse.Action,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("FHIR_ADAPTER_"):
            monkeypatch.delenv(name)
    name = getattr(action, "env_name", None)
    assert name, (
        f"{action.option_strings[0]} of `{' '.join(path)}` is not read from the environment"
    )
    for required in parser._actions:
        if getattr(required, "env_required", False):
            monkeypatch.setenv(f"FHIR_ADAPTER_{required.env_name}", "required-value")  # type: ignore[attr-defined]
    argv = _argv(path, parser)
    without = getattr(parse(argv), action.dest)
    raw, expected = _sample(action)
    monkeypatch.setenv(f"FHIR_ADAPTER_{name}", raw)
    assert getattr(parse(argv), action.dest) == expected != without
    # set but empty is an error naming the variable, for every option alike
    monkeypatch.setenv(f"FHIR_ADAPTER_{name}", "")
    with pytest.raises(OptionError, match=rf"^FHIR_ADAPTER_{name}='' is empty"):
        parse(argv)


def test_an_empty_rules_variable_names_it() -> None:
    proc = _cli({"FHIR_ADAPTER_RULES": ""}, "evaluate", CLEAN)
    assert proc.returncode == 2
    assert (
        proc.stderr
        == "fhir-adapter: error: FHIR_ADAPTER_RULES='' is empty; give it a value or unset it\n"
    )


def test_a_required_option_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FHIR_ADAPTER_OUT", "export-dir")
    assert parse(["export"]).out == "export-dir"
    monkeypatch.delenv("FHIR_ADAPTER_OUT")
    with pytest.raises(Exception, match=r"--out \(or FHIR_ADAPTER_OUT\) is required"):
        parse(["export"])


@pytest.mark.parametrize("word", ["1", "true", "YES", "on"])
def test_on_words(word: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FHIR_ADAPTER_DRY_RUN", word)
    assert parse(["run"]).dry_run is True


@pytest.mark.parametrize("word", ["0", "false", "No", "off"])
def test_off_words(word: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FHIR_ADAPTER_VALIDATE", word)
    assert parse(["evaluate", CLEAN]).validate is False


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fhir_adapter.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **env},
    )


@pytest.mark.parametrize(
    ("variable", "value", "command"),
    [
        ("FHIR_ADAPTER_DRY_RUN", "maybe", ["run", "--base-url", "http://127.0.0.1:9/fhir"]),
        ("FHIR_ADAPTER_SKIP_BAD_LINES", "", ["evaluate", CLEAN]),
        ("FHIR_ADAPTER_VALIDATE", "2", ["evaluate", CLEAN]),
        ("FHIR_ADAPTER_WORKERS", "abc", ["evaluate", CLEAN]),
        ("FHIR_ADAPTER_PORT", "http", ["serve"]),
        ("FHIR_ADAPTER_TIMEOUT", "soon", ["fixtures", "load"]),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(
    variable: str, value: str, command: list[str]
) -> None:
    """Exit 2 before any work, blaming the variable, not a flag the user never typed."""
    proc = _cli({variable: value}, *command)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"fhir-adapter: error: {variable}={value!r}")
    assert len(proc.stderr.splitlines()) == 1
    assert "--" not in proc.stderr
    assert proc.stdout == ""


def test_two_variables_that_exclude_each_other(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FHIR_ADAPTER_GROUP", "g1")
    monkeypatch.setenv("FHIR_ADAPTER_PATIENT_LEVEL", "1")
    assert main(["export", "--out", "x"]) == 2
    # a flag on the command line wins over the variable of the option it excludes
    assert parse(["export", "--out", "x", "--group", "g2"]).patient_level is False


def test_the_flag_wins_over_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FHIR_ADAPTER_WORKERS", "3")
    monkeypatch.setenv("FHIR_ADAPTER_PROCEDURE", "a,b")
    assert parse(["evaluate", CLEAN, "--workers", "1"]).workers == 1
    assert parse(["run", "--procedure", "c"]).procedure == ["c"]
    assert parse(["evaluate", CLEAN]).workers == 3


def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("FHIR_ADAPTER_"):
            monkeypatch.delenv(name)


def test_a_variable_of_several_meanings_has_a_name_for_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`--payer` is a policy id (evaluate, run), a URL (preauth), a flag (serve): each has
    its own variable, and the shared FHIR_ADAPTER_PAYER is read only where its value fits."""
    _clean_environment(monkeypatch)
    monkeypatch.setenv("FHIR_ADAPTER_PAYER_POLICY", "aetna-cpb-0274")
    monkeypatch.setenv("FHIR_ADAPTER_PAYER_URL", "https://payer.example.org/fhir")
    monkeypatch.setenv("FHIR_ADAPTER_SERVE_PAYER", "on")
    assert parse(["evaluate", CLEAN]).payer == "aetna-cpb-0274"
    assert parse(["preauth", "--service-request", "sr"]).payer == "https://payer.example.org/fhir"
    assert parse(["serve"]).payer is True
    _clean_environment(monkeypatch)
    for value in ("aetna-cpb-0274", "http://127.0.0.1:8080/fhir", "on", "cigna-0052"):
        monkeypatch.setenv("FHIR_ADAPTER_PAYER", value)
        policy = parse(["evaluate", CLEAN]).payer
        assert policy == (value if value in ("aetna-cpb-0274", "cigna-0052") else None)
        assert parse(["serve"]).payer is (value == "on")
        if value.startswith("http"):
            assert parse(["preauth", "--service-request", "sr"]).payer == value
        else:
            with pytest.raises(OptionError, match=r"FHIR_ADAPTER_PAYER_URL\) is required; "):
                parse(["preauth", "--service-request", "sr"])


def test_a_value_from_a_variable_is_blamed_on_it() -> None:
    proc = _cli(
        {"FHIR_ADAPTER_PAYER_URL": "aetna-cpb-0274"},
        "preauth",
        str(CASES.parent / "prior-auth" / "pa-met.json"),
        "--service-request",
        "pa-met-sr",
    )
    assert proc.returncode == 2 and "FHIR_ADAPTER_PAYER_URL: the base URL" in proc.stderr
    assert "--base-url" not in proc.stderr
    proc = _cli({"FHIR_ADAPTER_BASE_URL": "fhir.example.org"}, "run", "--dry-run")
    assert proc.returncode == 2 and "FHIR_ADAPTER_BASE_URL: the base URL" in proc.stderr


def test_a_format_another_command_takes_is_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    _clean_environment(monkeypatch)
    monkeypatch.setenv("FHIR_ADAPTER_FORMAT", "csv")
    assert parse(["evaluate", CLEAN]).format == "csv"
    assert parse(["feedback"]).format == "table"
    assert parse(["fixtures", "list"]).format == "table"
    monkeypatch.setenv("FHIR_ADAPTER_FORMAT", "json")
    assert parse(["feedback"]).format == "json"
    monkeypatch.setenv("FHIR_ADAPTER_FEEDBACK_FORMAT", "table")
    assert parse(["feedback"]).format == "table"
    monkeypatch.setenv("FHIR_ADAPTER_FEEDBACK_FORMAT", "csv")
    with pytest.raises(OptionError, match=r"^FHIR_ADAPTER_FEEDBACK_FORMAT='csv' is not one of"):
        parse(["feedback"])
