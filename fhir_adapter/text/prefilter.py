"""Literal strings that every match of a regular expression contains: a prefilter.

Most of the vocabulary's patterns open with an alternation or a character class
(`(?:poor|marginal) surgical candidate`), so Python's regex engine cannot skip
ahead to where one might match and tries every position of a text. A substring
test for a word the pattern cannot match without ("candidate") costs a fraction
of that, and most patterns match nothing in most texts. The same idea as RE2's
and codesearch's prefilters, on Python's own regex parse tree.

Sound by construction: a text without any of the strings cannot match. When no
such set can be worked out (a case-insensitive pattern, only optional parts...)
the answer is None and the pattern is always run.
"""

from __future__ import annotations

import importlib
import re
from types import ModuleType
from typing import Any


def _stdlib(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:  # a Python whose `re` is built differently: nothing is prefiltered
        return None


# the parser behind `re` (Python 3.11+): not a public interface, so used defensively
_sre = _stdlib("re._parser")
_c: Any = _stdlib("re._constants")

_MIN_USEFUL = 3  # shorter strings are in nearly every text: no better than running it


def required_literals(pattern: str, flags: int = 0) -> frozenset[str] | None:
    """Strings one of which is in every match of `pattern`; None when unknown or useless."""
    found = required_sets(pattern, flags)
    return found[0] if found else None


def required_sets(pattern: str, flags: int = 0) -> tuple[frozenset[str], ...]:
    """Every useful set of strings one of which is in every match of `pattern` (the parts of
    its top-level sequence: each is in every match, so a text must hold one string of each
    set), the most selective first; empty when none is known.

    A text that holds "guidance" but none of the imaging words a guidance pattern opens
    with is ruled out by the second set where the best one alone lets it by."""
    if _sre is None or _c is None or flags & re.IGNORECASE:
        return ()
    try:
        tree = _sre.parse(pattern, flags)
    except Exception:  # any surprise from a private parser: run the pattern unfiltered
        return ()
    if tree.state.flags & re.IGNORECASE:
        return ()
    useful = [c for c in _candidates(list(tree)) if min(len(s) for s in c) >= _MIN_USEFUL]
    # stable: between equally selective sets, the first in the pattern comes first
    return tuple(frozenset(c) for c in sorted(useful, key=_selectivity, reverse=True))


def _selectivity(strings: set[str]) -> tuple[int, int]:
    """The most selective set: the longest shortest string, then the fewest strings."""
    return min(len(s) for s in strings), -len(strings)


def _sequence(items: list[tuple[Any, Any]]) -> set[str] | None:
    """The best required set of a sequence: one of its literal runs or one of its parts."""
    candidates = _candidates(items)
    return max(candidates, key=_selectivity) if candidates else None


def _candidates(items: list[tuple[Any, Any]]) -> list[set[str]]:
    """The required sets of a sequence: each of its literal runs and parts that has one."""
    candidates: list[set[str]] = []
    run: list[str] = []

    def close() -> None:
        if run:
            candidates.append({"".join(run)})
            run.clear()

    for op, arg in items:
        if op is _c.LITERAL:
            run.append(chr(arg))
        elif op in (_c.AT, _c.ASSERT, _c.ASSERT_NOT):
            continue  # zero-width: the literals on either side stay adjacent in the match
        elif op is _c.SUBPATTERN:
            _group, add_flags, _del_flags, body = arg
            if add_flags & re.IGNORECASE:
                close()
                continue
            exact = _exact(list(body))
            if exact is not None:
                run.append(exact)
                continue
            close()
            sub = _sequence(list(body))
            if sub:
                candidates.append(sub)
        elif op is _c.BRANCH:
            close()
            union: set[str] = set()
            for alternative in arg[1]:
                sub = _sequence(list(alternative))
                if not sub:
                    union = set()
                    break
                union |= sub
            if union:
                candidates.append(union)
        elif op in (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT):
            close()
            low, _high, body = arg
            if low >= 1:
                sub = _sequence(list(body))
                if sub:
                    candidates.append(sub)
        else:  # a class, any character, a back-reference...: the run ends here
            close()
    close()
    return candidates


def _exact(items: list[tuple[Any, Any]]) -> str | None:
    """The text a group of plain literals matches (zero-width items aside), else None."""
    out = []
    for op, arg in items:
        if op is _c.LITERAL:
            out.append(chr(arg))
        elif op not in (_c.AT, _c.ASSERT, _c.ASSERT_NOT):
            return None
    return "".join(out)


def opens_with_boundary(pattern: str) -> bool:
    """Whether `pattern` is `\\b` followed by the rest as one sequence (no top-level `|`),
    so that the rest can run alone and the boundary be checked at each match's start."""
    if _sre is None or _c is None or not pattern.startswith("\\b"):
        return False
    try:
        items = list(_sre.parse(pattern))
    except Exception:  # as above: a surprise means no
        return False
    return bool(items) and items[0] == (_c.AT, _c.AT_BOUNDARY)
