"""A chargemaster: the provider's charge per CPT/HCPCS code, for Claim unitPrice/net/total.

Accepted as CSV (code, amount; a header row is optional; `$` and thousands separators
are allowed) or as a JSON/YAML mapping of code to amount. A code may carry the
modifier its charge is for (`77013-26`), used before the code's own charge. A code
listed twice is an error naming the line: which charge was meant is not for us to guess.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from fhir_adapter.errors import AdapterError
from fhir_adapter.yaml_errors import located, shape_problem, yaml_error_line

# a code, optionally with the modifier its charge is for ("77013-26": the professional part)
_CODE = re.compile(r"^([0-9A-Z]{5})(?:[- ]([0-9A-Z]{2}))?$")
_NUMBER = re.compile(r"^-?\$?\s*[0-9][0-9,]*(?:\.[0-9]+)?$")


def load_charges(path: str | os.PathLike[str]) -> dict[str, float]:
    """Read a chargemaster; an unreadable file or a bad entry is one AdapterError line naming
    the file and, where known, the line and column."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise AdapterError(f"{p}: cannot read chargemaster: {exc.strerror or exc}") from None
    if p.suffix.lower() in (".json", ".yaml", ".yml"):
        try:
            raw = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
        except json.JSONDecodeError as exc:
            raise AdapterError(f"{p}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from None
        except yaml.YAMLError as exc:
            raise AdapterError(yaml_error_line(str(p), exc)) from None
        if not isinstance(raw, dict):
            raise AdapterError(f"{p}: a chargemaster is a mapping of code to amount")
        problem = shape_problem(text)  # a code written twice: the parsers keep the last
        if problem is not None:
            raise AdapterError(f"{p}:{problem[0]}:{problem[1]}: {problem[2]}")
        charges: dict[str, float] = {}
        given: dict[str, Any] = {}
        for k, v in raw.items():
            try:  # JSON is YAML too: its positions are found the same way
                code = _code(k)
                if code in given:
                    raise ValueError(f"{code} is charged twice ({given[code]!r} and {k!r})")
                given[code] = k
                charges[code] = _amount(k, v)
            except ValueError as exc:
                raise AdapterError(f"{located(str(p), text, [k])}: {exc}") from None
        return charges
    out: dict[str, float] = {}
    first_line: dict[str, int] = {}
    for n, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        cells = [c.strip() for c in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if len(cells) < 2:
            raise AdapterError(f"{p}:{n}: expected 'code,amount'")
        if n == 1 and not _CODE.match(cells[0].upper()) and not _NUMBER.match(cells[1]):
            continue  # header
        try:
            code = _code(cells[0])
            if code in first_line:
                raise ValueError(f"{code} is charged twice (line {first_line[code]} and here)")
            first_line[code] = n
            out[code] = _amount(cells[0], cells[1])
        except ValueError as exc:
            raise AdapterError(f"{p}:{n}: {exc}") from None
    return out


def _code(value: Any) -> str:
    """The code, upper-cased, as `code` or `code-modifier`; ValueError saying why not."""
    m = _CODE.match(str(value).strip().upper())
    if not m:
        raise ValueError(f"{value!r} is not a CPT/HCPCS code (or code-modifier)")
    return f"{m.group(1)}-{m.group(2)}" if m.group(2) else m.group(1)


def line_charge(charges: Mapping[str, float], code: str, modifiers: list[str]) -> float | None:
    """The charge for a line: for the code with one of its modifiers ("77013-26"), else
    for the code."""
    for modifier in modifiers:
        if f"{code}-{modifier}" in charges:
            return charges[f"{code}-{modifier}"]
    return charges.get(code)


def _amount(code: Any, value: Any) -> float:
    """A charge of zero or more; ValueError naming the code otherwise."""
    text = str(value).replace("$", "").replace(",", "").strip()
    try:
        amount = float(text)
    except ValueError:
        amount = -1.0
    if not amount >= 0 or amount != amount or amount == float("inf"):
        raise ValueError(f"charge for {code} is not an amount: {value!r}")
    return amount
