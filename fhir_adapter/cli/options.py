"""Options shared by several commands, and the environment every option may come from.

Every option may come from `FHIR_ADAPTER_<NAME>` (a flag on the command line wins).
An option is declared with `env_option`, which leaves its default at None so that
"not given" can be told from "given": `apply_environment` then fills it from the
variable, converted and checked with the flag's own rules but blamed on the variable,
or from the declared default.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from fhir_adapter.errors import AdapterError

if TYPE_CHECKING:
    from fhir_adapter.client.auth import FhirAuth
    from fhir_adapter.client.rest import FhirClient
    from fhir_adapter.pack import Pack
    from fhir_adapter.payers import Payers
    from fhir_adapter.writeback import CaseOutput

EXIT_USAGE = 2
SEVERITIES = ("high", "moderate", "low")
FORMATS = ("table", "json", "html", "csv")
ENV_PREFIX = "FHIR_ADAPTER_"
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


class OptionError(AdapterError):
    """A `FHIR_ADAPTER_*` variable the option it stands for would refuse, or a missing option."""


def env_name_of(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_").upper()


class SharedName:
    """A variable name several commands read with different meanings (an older name kept
    working): a command reads it only when the value has the shape its option takes."""

    def __init__(self, name: str, fits: Callable[[str], bool], shape: str) -> None:
        self.name, self.fits, self.shape = name, fits, shape


def looks_like_url(raw: str) -> bool:
    return raw.strip().lower().startswith(("http://", "https://"))


def is_on_off(raw: str) -> bool:
    return raw.strip().lower() in TRUE_WORDS | FALSE_WORDS


def env_option(
    p: argparse.ArgumentParser | Any,
    flag: str,
    env_name: str | None = None,
    default: Any = None,
    *,
    shared: SharedName | None = None,
    **kw: Any,
) -> argparse.Action:
    """An option that may also come from FHIR_ADAPTER_<env_name> (default: from the flag).

    Flags (`action="store_true"`) read 1/true/yes/on and 0/false/no/off; repeatable
    options (`action="append"`) read a comma-separated list. `shared`: an older name
    read when FHIR_ADAPTER_<env_name> is not set and its value fits this option.
    """
    name = env_name or env_name_of(flag)
    required = kw.pop("required", False)
    kw["help"] = " ".join(filter(None, [kw.get("help"), f"[${ENV_PREFIX}{name}]"]))
    action: Any = p.add_argument(flag, default=None, **kw)
    action.env_name = name
    action.env_shared = shared
    action.env_required = required
    if default is None and kw.get("action") == "store_true":
        default = False
    elif default is None and kw.get("action") == "append":
        default = []
    action.env_default = default
    return action  # type: ignore[no-any-return]


def apply_environment(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Fill every option not given on the command line from its variable, or its default.

    Raises OptionError naming the variable when its value would be refused
    as the flag's; two variables for options that exclude each other are refused too.
    """
    sources: dict[str, str] = {}
    args.env_sources = sources
    for chosen in _chosen_parsers(parser, args):
        from_env: dict[argparse.Action, str] = {}
        given = {a for a in chosen._actions if getattr(a, "env_name", None) and _is_set(args, a)}
        for action in chosen._actions:
            name = getattr(action, "env_name", None)
            if name is None or action in given:
                continue
            own, (name, raw, unread) = name, _variable(action, name)
            if raw is not None and not _excluded_by(chosen, action, given):
                setattr(args, action.dest, _from_environment(action, name, raw))
                from_env[action] = name
                sources[action.dest] = ENV_PREFIX + name
            else:
                setattr(args, action.dest, _converted_default(action))
            if getattr(action, "env_required", False) and getattr(args, action.dest) is None:
                raise OptionError(
                    f"{action.option_strings[0]} (or {ENV_PREFIX}{own}) is required" + unread
                )
        for group in chosen._mutually_exclusive_groups:
            clash = [
                n for a, n in from_env.items() if a in group._group_actions and _truthy(args, a)
            ]
            if len(clash) > 1:
                names = " and ".join(ENV_PREFIX + n for n in clash)
                raise OptionError(f"{names} are both set; they exclude each other")


def _variable(action: argparse.Action, name: str) -> tuple[str, str | None, str]:
    """The variable `action` reads (its own name, else a shared older name whose value
    fits), its value, and words for a required option's error about a shared name whose
    value was not read because it does not fit."""
    raw = os.environ.get(ENV_PREFIX + name)
    shared: SharedName | None = getattr(action, "env_shared", None)
    if raw is not None or shared is None:
        return name, raw, ""
    older = os.environ.get(ENV_PREFIX + shared.name)
    if older is None:
        return name, None, ""
    if shared.fits(older):
        return shared.name, older, ""
    return (
        name,
        None,
        (f"; {ENV_PREFIX}{shared.name}={older!r} is not read for it, not being {shared.shape}"),
    )


def option_source(args: argparse.Namespace, dest: str, flag: str) -> str:
    """What to blame for the value of `dest`: the variable it came from, else its flag."""
    sources: dict[str, str] = getattr(args, "env_sources", {})
    return sources.get(dest, flag)


def _chosen_parsers(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> list[argparse.ArgumentParser]:
    chosen = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            sub = action.choices.get(getattr(args, action.dest, None) or "")
            if sub is not None:
                chosen += _chosen_parsers(sub, args)
    return chosen


def _is_set(args: argparse.Namespace, action: argparse.Action) -> bool:
    value = getattr(args, action.dest, None)
    return value is not None


def _truthy(args: argparse.Namespace, action: argparse.Action) -> bool:
    return bool(getattr(args, action.dest, None))


def _excluded_by(
    parser: argparse.ArgumentParser, action: argparse.Action, given: set[argparse.Action]
) -> bool:
    """Whether a flag given on the command line excludes `action` (so its variable is moot)."""
    return any(
        action in group._group_actions and given & set(group._group_actions)
        for group in parser._mutually_exclusive_groups
    )


def _converted_default(action: argparse.Action) -> Any:
    default = getattr(action, "env_default", None)
    if isinstance(default, str) and callable(action.type):
        return action.type(default)
    return default


def _from_environment(action: argparse.Action, name: str, raw: str) -> Any:
    variable = f"{ENV_PREFIX}{name}={raw!r}"
    if not raw.strip():  # set but empty is a slip (`VAR= cmd`), never "use the default"
        raise OptionError(f"{variable} is empty; give it a value or unset it")
    if isinstance(action, argparse._StoreTrueAction):
        word = raw.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise OptionError(f"{variable} is not on or off (1/true/yes/on or 0/false/no/off)")
    if isinstance(action, argparse._AppendAction):
        return [_one_value(action, variable, v.strip()) for v in raw.split(",") if v.strip()]
    return _one_value(action, variable, raw)


def _one_value(action: argparse.Action, variable: str, raw: str) -> Any:
    value: Any = raw
    if callable(action.type):
        try:
            value = action.type(raw)
        except argparse.ArgumentTypeError as exc:
            raise OptionError(f"{variable}: {exc}") from None
        except (TypeError, ValueError):
            kind = getattr(action.type, "__name__", "value")
            kind = {"int": "a whole number", "float": "a number"}.get(kind, f"a valid {kind}")
            raise OptionError(f"{variable} is not {kind}") from None
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise OptionError(f"{variable} is not one of: {choices}")
    return value


def whole_number(low: int, high: int | None = None, rule: str = "") -> Callable[[str], int]:
    """An argparse type: a whole number from `low` (to `high`); `rule` says the range in
    the message when the bounds alone do not ("0 (all cores) or more")."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            said = rule or (f"{low} to {high}" if high is not None else f"at least {low}")
            raise argparse.ArgumentTypeError(f"{text!r}: must be {said}")
        return value

    return parse


def positive_seconds(text: str) -> float:
    """A finite number of seconds above zero (requests rejects the rest with a traceback)."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number of seconds above 0")
    return value


_YEAR = r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
_TIME = r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]{1,9})?"
_ZONE = r"(Z|[+-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
_FHIR_DATE = rf"{_YEAR}(-(0[1-9]|1[0-2])(-(0[1-9]|[12][0-9]|3[01]))?)?"
_FHIR_INSTANT = rf"{_YEAR}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T{_TIME}{_ZONE}"
_EARLIEST_ZONE = "+14:00"  # a day's first moment anywhere on earth


def _real_calendar_day(text: str) -> bool:
    from datetime import date

    try:
        date.fromisoformat(text[:10])
    except ValueError:
        return len(text) < 10  # a year or year-month has no day to be wrong
    return True


def fhir_date_or_datetime(text: str) -> str:
    """`run --since`: a FHIR date or dateTime, as a search's `date=ge` takes it."""
    import re

    pattern = rf"{_FHIR_DATE}|{_FHIR_INSTANT}"
    if not re.fullmatch(pattern, text) or not _real_calendar_day(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a FHIR date or dateTime (e.g. 2026-01-01 or 2026-01-01T08:00:00Z)"
        )
    return text


def fhir_instant_or_day(text: str) -> str:
    """`export --since`: a FHIR instant; a day (YYYY-MM-DD) means from its first moment
    anywhere (T00:00:00+14:00), so no change made that day in any time zone is missed."""
    import re

    if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text) and _real_calendar_day(text):
        return f"{text}T00:00:00{_EARLIEST_ZONE}"
    if not re.fullmatch(_FHIR_INSTANT, text) or not _real_calendar_day(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a FHIR instant or a date (e.g. 2026-01-01T00:00:00Z or 2026-01-01)"
        )
    return text


def add_server_options(
    p: argparse.ArgumentParser, *, write: bool = False, url: bool = True
) -> None:
    """The server's URL and auth options; `write=True`: the `--write-` family for the
    server the output goes to (its own secrets: FHIR_ADAPTER_WRITE_TOKEN and
    FHIR_ADAPTER_WRITE_CLIENT_SECRET, never the reading server's)."""
    flag, env, which = (
        ("--write-", "WRITE_", "the server written to: ") if write else ("--", "", "")
    )
    if url:
        env_option(p, f"{flag}base-url", f"{env}BASE_URL", help=f"{which}FHIR R4 base URL")
    env_option(
        p,
        f"{flag}auth",
        f"{env}AUTH",
        "none",
        choices=("none", "bearer", "client-secret", "smart-backend"),
        help=f"{which}bearer: token from FHIR_ADAPTER_{env}TOKEN; client-secret: secret from "
        f"FHIR_ADAPTER_{env}CLIENT_SECRET; smart-backend: {flag}private-key",
    )
    env_option(p, f"{flag}client-id", f"{env}CLIENT_ID")
    env_option(p, f"{flag}private-key", f"{env}PRIVATE_KEY", metavar="PATH")
    env_option(p, f"{flag}key-id", f"{env}KEY_ID")
    env_option(p, f"{flag}jku", f"{env}JKU", help="JWKS URL to put in the assertion header")
    env_option(p, f"{flag}token-url", f"{env}TOKEN_URL", help="default: smart-configuration")
    env_option(p, f"{flag}scope", f"{env}SCOPE")
    if not write:
        env_option(p, "--timeout", "TIMEOUT", "60", type=positive_seconds, help="seconds (> 0)")


def add_report_options(p: argparse.ArgumentParser, formats: Sequence[str] = FORMATS) -> None:
    env_option(p, "--format", "FORMAT", "table", choices=tuple(formats))
    env_option(
        p,
        "--block-on",
        "BLOCK_ON",
        choices=SEVERITIES,
        help="lowest finding severity that blocks the Claim (default: the pack's, high)",
    )
    env_option(p, "--rules", "RULES", metavar="YAML", help="rule pack (default: bundled)")
    env_option(
        p,
        "--charges",
        "CHARGES",
        metavar="FILE",
        help="chargemaster (CSV code,amount or a JSON/YAML mapping) pricing the Claim lines",
    )
    env_option(
        p,
        "--payers",
        "PAYERS",
        metavar="DIR",
        action="append",
        help="a directory of payer overlays (*.yaml, *.yml) added to the bundled ones (repeatable)",
    )
    env_option(
        p,
        "--payer",
        "PAYER_POLICY",
        metavar="ID",
        shared=SharedName("PAYER", _policy_like, "a policy id"),
        help="judge every case by this payer policy id",
    )


def _policy_like(raw: str) -> bool:
    return not looks_like_url(raw) and not is_on_off(raw)


def format_option(p: argparse.ArgumentParser, env_name: str, formats: Sequence[str]) -> None:
    """`--format` of a command that does not take every report format: its own variable,
    and FHIR_ADAPTER_FORMAT only when set to one of its formats."""
    env_option(
        p,
        "--format",
        env_name,
        "table",
        choices=tuple(formats),
        shared=SharedName("FORMAT", lambda raw: raw in formats, "one of " + ", ".join(formats)),
    )


def load_rules_and_charges(args: argparse.Namespace) -> tuple[Pack, dict[str, float] | None]:
    """The pack of `--rules` and the chargemaster of `--charges`, read before any work starts."""
    from fhir_adapter.pack import load_pack
    from fhir_adapter.writeback.charges import load_charges

    return load_pack(args.rules), load_charges(args.charges) if args.charges else None


def load_payer_options(args: argparse.Namespace, pack: Pack) -> Payers:
    """The bundled payer overlays, those of `--payers`, and the one `--payer` forces."""
    from fhir_adapter.payers import load_payers

    return load_payers(pack, args.payers or (), forced=args.payer)


def make_auth(args: argparse.Namespace, *, write: bool = False) -> FhirAuth | None:
    """The auth object for the chosen mode; secrets only from the environment or files
    (the `--write-` family's from FHIR_ADAPTER_WRITE_TOKEN / _WRITE_CLIENT_SECRET)."""
    from fhir_adapter.client import auth
    from fhir_adapter.errors import AdapterError

    dest, env, flag = ("write_", "WRITE_", "--write-") if write else ("", "", "--")

    def arg(name: str) -> Any:
        return getattr(args, dest + name)

    extra = {"token_endpoint": arg("token_url")}
    if arg("scope"):
        extra["scope"] = arg("scope")
    mode = arg("auth")
    if mode == "none":
        return None
    if mode == "bearer":
        return auth.BearerAuth(os.environ.get(f"FHIR_ADAPTER_{env}TOKEN", ""))
    if mode == "client-secret":
        return auth.ClientSecretAuth(
            arg("client_id") or "", os.environ.get(f"FHIR_ADAPTER_{env}CLIENT_SECRET", ""), **extra
        )
    key = arg("private_key")
    if not key:
        raise AdapterError(f"{flag}auth smart-backend needs {flag}private-key PATH")
    try:
        with open(key, "rb") as fh:
            pem = fh.read()
    except OSError as exc:
        raise AdapterError(f"cannot read private key {key}: {exc.strerror}") from None
    return auth.SmartBackendAuth(
        arg("client_id") or "", pem, key_id=arg("key_id"), jku=arg("jku"), **extra
    )


def warn(message: str) -> None:
    """A warning of the run on stderr, one line."""
    from fhir_adapter.errors import printable

    print(f"fhir-adapter: warning: {printable(message)}", file=sys.stderr)


def connect(args: argparse.Namespace, *, write: bool = False) -> FhirClient:
    """The client of `--base-url` (or, `write=True`, of `--write-base-url`)."""
    from fhir_adapter.client.rest import FhirClient, check_base_url
    from fhir_adapter.errors import AdapterError

    flag = "--write-base-url" if write else "--base-url"
    base_url = args.write_base_url if write else args.base_url
    if not base_url:
        raise AdapterError(f"{flag} (or FHIR_ADAPTER_{env_name_of(flag)}) is required")
    check_base_url(base_url, option_source(args, flag.lstrip("-").replace("-", "_"), flag))
    return FhirClient(
        base_url,
        make_auth(args, write=write),
        timeout=(min(10.0, args.timeout), args.timeout),
        warn=warn,
    )


class Progress:
    """A one-line progress bar on a terminal (cases, throughput, ETA); silent otherwise."""

    def __init__(self) -> None:
        import time

        self.enabled = sys.stderr.isatty()
        self.count = 0
        self.start = time.monotonic()

    def tick(self, _result: object) -> None:
        self.update(self.count + 1, 0)

    def update(self, done: int, total: int) -> None:
        import time

        self.count = done
        if not self.enabled:
            return
        rate = done / max(1e-6, time.monotonic() - self.start)
        line = f"\r{done} case(s), {rate:.1f}/s"
        if total:
            width = 30
            filled = int(width * done / total)
            eta = (total - done) / rate if rate else 0.0
            line = f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} cases, {rate:.0f}/s, ETA {eta:.0f} s"
        sys.stderr.write(line)
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled and self.count:
            sys.stderr.write("\n")


def emit(
    cases: Sequence[CaseOutput],
    fmt: str,
    *,
    pack: Pack | None = None,
    source: Sequence[str] = (),
    meta: dict[str, Any] | None = None,
    html: str | None = None,
) -> int:
    """Print the report in `fmt` on stdout; the exit code says whether anything blocks.

    `html`: the page already rendered for `--out`, so that it is not rendered twice.
    """
    from fhir_adapter.report import exit_code, render_csv, render_html, render_json, render_table

    if fmt == "json":
        sys.stdout.buffer.write(render_json(cases, meta=meta))
        sys.stdout.flush()
    elif fmt == "html":
        sys.stdout.write(html if html is not None else render_html(cases, pack=pack, source=source))
    elif fmt == "csv":
        sys.stdout.write(render_csv(cases))
    else:
        sys.stdout.write(render_table(cases))
    if not cases:
        print("fhir-adapter: no Procedure coded CPT 47382 was found", file=sys.stderr)
    return exit_code(cases)
