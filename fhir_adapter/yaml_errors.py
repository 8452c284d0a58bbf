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


FOLDED = (
    "this list item is folded into the text above it (its indentation is deeper than its "
    "list's, or the list's is too shallow)"
)


def shape_problem(text: str) -> tuple[int, int, str] | None:
    """1-based line, column and what is wrong, for the two YAML mistakes that still parse.

    One line indented a step too far (or its list a step too little) is valid YAML
    that means something else: a `- item` line becomes the tail of the unquoted string
    above it (`inoperable - non-operable`, or a whole list one string), or the keys of
    the next entry land in the one above, where a key written twice silently replaces
    the first (a rule takes over its predecessor's place). No value the packs hold spans
    lines unquoted and no mapping names a key twice, so both are refused, found by
    position in the C parser's events.
    """
    loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    lines = text.splitlines()
    # per open collection: the keys seen (None for a sequence) and whether a key is next
    stack: list[tuple[set[str] | None, list[bool]]] = []

    def value_done() -> None:
        if stack and stack[-1][0] is not None:
            stack[-1][1][0] = not stack[-1][1][0]

    try:
        for event in yaml.parse(text, Loader=loader):
            first, last = event.start_mark, event.end_mark
            if isinstance(event, yaml.ScalarEvent) and first and last:
                keys = stack[-1][0] if stack else None
                if keys is not None and stack[-1][1][0]:
                    if event.value in keys:
                        where = (first.line + 1, first.column + 1)
                        return (*where, f"the key {event.value!r} is written twice in one mapping")
                    keys.add(event.value)
                if not event.style:
                    for n in range(first.line + 1, min(last.line, len(lines) - 1) + 1):
                        stripped = lines[n].lstrip()
                        if stripped == "-" or stripped.startswith("- "):
                            return n + 1, len(lines[n]) - len(stripped) + 1, FOLDED
                value_done()
            elif isinstance(event, yaml.MappingStartEvent):
                stack.append((set(), [True]))
            elif isinstance(event, yaml.SequenceStartEvent):
                stack.append((None, [False]))
            elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
                stack.pop()
                value_done()
            elif isinstance(event, yaml.AliasEvent):
                value_done()
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
