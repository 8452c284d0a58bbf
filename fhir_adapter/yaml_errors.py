"""One line per problem in a YAML (or JSON) file the user wrote: `file:line:col: ...`.

PyYAML's errors span several lines (problem, context, a snippet with a caret) and
pydantic's name a path, not a line; editors and terminals jump to `file:line:col`,
so the rule pack and chargemaster loaders describe each problem this way. Only
error paths come here: the text is parsed again, nothing is meant to be fast.
"""

from __future__ import annotations

from collections.abc import Sequence

import yaml


def yaml_error_line(origin: str, exc: yaml.YAMLError) -> str:
    """`origin:line:col: not valid YAML: problem (context at line:col)` from a parser error."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is None or not problem:
        return f"{origin}: not valid YAML: {' '.join(str(exc).split())}"
    line = f"{origin}:{mark.line + 1}:{mark.column + 1}: not valid YAML: {problem}"
    context, at = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context:
        line += f" ({context}" + (f" at {at.line + 1}:{at.column + 1})" if at else ")")
    return line


def folded_list_item(text: str) -> tuple[int, int] | None:
    """1-based line and column of a `- item` line folded into the unquoted text above it.

    One line indented a step too far (or its list a step too little) is still valid
    YAML: the item becomes the tail of the string before it (`inoperable - non-operable`),
    or a whole list one string. No value the packs hold spans lines unquoted, so such a
    line is a mistake of indentation, and it is found by position (the C parser's events).
    """
    loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    lines = text.splitlines()
    try:
        for event in yaml.parse(text, Loader=loader):
            first, last = event.start_mark, event.end_mark
            if not isinstance(event, yaml.ScalarEvent) or event.style or not (first and last):
                continue
            start, end = first.line, last.line
            for n in range(start + 1, min(end, len(lines) - 1) + 1):
                stripped = lines[n].lstrip()
                if stripped == "-" or stripped.startswith("- "):
                    return n + 1, len(lines[n]) - len(stripped) + 1
    except yaml.YAMLError:
        return None  # reported by the loader, with its own position
    return None


def located(origin: str, text: str, path: Sequence[str | int]) -> str:
    """`origin:line:col` of the entry at `path` in the YAML `text`, else just `origin`."""
    position = path_position(text, path)
    return f"{origin}:{position[0]}:{position[1]}" if position else origin


def path_position(text: str, path: Sequence[str | int]) -> tuple[int, int] | None:
    """1-based line and column of the key (or list item) at `path`; None when not found.

    A path element that names nothing at its level is passed over (pydantic puts the
    tag of a union member in its paths), but the last must be found: a value merged in
    from another file is not pinned on some line of this one.
    """
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    mark = None
    found = False
    for part in path:
        step = _step(node, part)
        found = step is not None
        if step is not None:
            mark, node = step
    return (mark.line + 1, mark.column + 1) if found and mark is not None else None


def _step(node: yaml.Node | None, part: str | int) -> tuple[yaml.Mark, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                return key.start_mark, value
    elif (
        isinstance(node, yaml.SequenceNode)
        and isinstance(part, int)
        and 0 <= part < len(node.value)
    ):
        return node.value[part].start_mark, node.value[part]
    return None
