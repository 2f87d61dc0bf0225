"""Safe YAML loading that keeps node positions and refuses bombs.

PyYAML's safe loader expands aliases lazily as shared objects, so a billion-laughs file loads in
microseconds and then explodes whatever walks it (schema validation, our checks). We compose the node
graph first, measure its expanded size and depth without expanding it, and only then construct data.
The node graph also gives every finding its real line and column.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import yaml

# libyaml for speed. InstructLab (`yaml.safe_load`) and yamllint use PyYAML's pure-Python parser, which
# rejects a few files libyaml accepts (a '?' inside a flow mapping, a tab after 'key:'): callers that
# need InstructLab's verdict and do not run yamllint (version 1 files) also call `check_pure_syntax`.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_DEPTH = 64
DEPTH_FIX = ("remove the extra nesting: a qna.yaml needs only 4 levels "
             "(seed_examples > item > questions_and_answers > item)")
GENERIC_FIX = "check this line: indent with spaces, write `key: value`, quote text that contains ': ' or '?'"


class YamlProblem(Exception):
    """A YAML document that cannot be used; carries the 1-based position of the problem."""

    def __init__(self, message: str, line: int = 1, col: int = 1) -> None:
        super().__init__(message)
        self.message, self.line, self.col = message, line, col


@dataclass(frozen=True)
class LoadedYaml:
    data: Any
    node: yaml.Node | None


def _pos(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def check_graph(root: yaml.Node, max_nodes: int) -> None:
    """Expanded node count, depth and alias cycles, computed without expanding anything."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            kids = _children(node)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            on_stack.discard(key)
            if size[key] > max_nodes:
                line, col = _pos(node)
                raise YamlProblem(
                    f"YAML expands to more than {max_nodes:,} nodes (aliases/anchors multiply content); "
                    "write the content out plainly or raise taxonomy.max_yaml_nodes", line, col)
            if depth[key] > MAX_DEPTH:
                line, col = _pos(node)
                raise YamlProblem(f"YAML is nested deeper than {MAX_DEPTH} levels; {DEPTH_FIX}", line, col)
            continue
        if key in size:
            continue
        if key in on_stack:
            line, col = _pos(node)
            raise YamlProblem("recursive YAML alias (an anchor that contains itself); remove the alias", line, col)
        on_stack.add(key)
        stack.append((node, True))
        if len(on_stack) > MAX_DEPTH:
            line, col = _pos(node)
            raise YamlProblem(f"YAML is nested deeper than {MAX_DEPTH} levels; {DEPTH_FIX}", line, col)
        for kid in _children(node):
            if id(kid) not in size:
                stack.append((kid, False))


def _syntax_fix(exc: yaml.MarkedYAMLError, text: str) -> tuple[str, int, int]:
    """PyYAML's words plus what to do, at the line a person should look at."""
    problem = exc.problem or ""
    context = exc.context or ""
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    where = f"{context} {problem}".strip() or str(exc)
    if "quoted scalar" in context and exc.context_mark is not None:
        start = exc.context_mark.line + 1
        return (f"YAML syntax error: {where}; close the quote opened on line {start} (or escape quotes inside it)",
                start, exc.context_mark.column + 1)
    char = text[mark.index] if mark is not None and mark.index < len(text) else ""
    if char == "\t" or ("\t" in problem) or "found character '\\t'" in problem:
        return (f"YAML syntax error: {where}; a tab character is not allowed here: indent with spaces", line, col)
    if "mapping values are not allowed" in problem:
        fix = ("indent keys of one mapping alike, and quote text that contains ': ' (e.g. answer: \"Note: ...\")")
    elif "could not find expected ':'" in problem or "simple key" in context:
        fix = "write every entry as `key: value` and keep continuation lines indented under their key (or use `|`)"
    elif "expected <block end>" in problem or "block" in context:
        fix = "align the entries of each list/mapping at the same indentation, with spaces"
    elif "maximum nesting depth" in problem or "nesting" in problem:
        fix = DEPTH_FIX
    elif "unhashable key" in problem:
        fix = "write each key as plain text (a list or mapping cannot be a key)"
    else:
        fix = GENERIC_FIX
    return f"YAML syntax error: {where}; {fix}", line, col


def _bad_scalar(loader: yaml.SafeLoader, root: yaml.Node) -> tuple[int, int, str]:
    """Find the scalar whose value cannot be built (an impossible date, a 5000-digit number...)."""
    constructor = _Loader("")
    stack = [root]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            try:
                constructor.construct_object(node, deep=True)
            except Exception as exc:  # noqa: BLE001 - any failure here is the answer
                line, col = _pos(node)
                return line, col, f"{node.value!r} cannot be read as {node.tag.rsplit(':', 1)[-1]} ({exc})"
        else:
            stack.extend(reversed(_children(node)))
    return 1, 1, "a value cannot be read"


def load_yaml(text: str, max_nodes: int = 200_000) -> LoadedYaml:
    """Parse one YAML document safely; raises YamlProblem with the position of the first problem."""
    loader = _Loader(text)
    node = None
    try:
        node = loader.get_single_node()
        if node is None:
            return LoadedYaml(None, None)
        check_graph(node, max_nodes)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        message, line, col = _syntax_fix(exc, text)
        raise YamlProblem(message, line, col) from None
    except yaml.YAMLError as exc:
        raise YamlProblem(f"YAML error: {exc}; {GENERIC_FIX}") from None
    except RecursionError:
        raise YamlProblem(f"YAML is nested deeper than {MAX_DEPTH} levels; {DEPTH_FIX}") from None
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        if node is None:
            raise YamlProblem(f"YAML error: {type(exc).__name__}: {exc}; {GENERIC_FIX}") from None
        line, col, what = _bad_scalar(loader, node)
        raise YamlProblem(f"{what}; quote it to keep it as text, or write a valid value", line, col) from None
    finally:
        loader.dispose()
    return LoadedYaml(data, node)


def check_pure_syntax(text: str) -> None:
    """Parse with PyYAML's pure-Python parser (what InstructLab uses); YamlProblem where it fails."""
    try:
        for _ in yaml.parse(text, Loader=yaml.SafeLoader):
            pass
    except yaml.MarkedYAMLError as exc:
        message, line, col = _syntax_fix(exc, text)
        raise YamlProblem(message, line, col) from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise YamlProblem(f"YAML error: {exc}; {GENERIC_FIX}") from None


def locate(node: yaml.Node | None, path: Sequence[Any]) -> tuple[int, int]:
    """Line and column (1-based) of the node at `path` (keys and indexes); the deepest one found.

    A collection reached through a mapping key is reported at its key (`seed_examples:`), where a
    person looks for it; a scalar at its value.
    """
    if node is None:
        return 1, 1
    here, key_node = node, None
    for part in path:
        nxt = nxt_key = None
        if isinstance(here, yaml.MappingNode):
            for k, v in here.value:
                if isinstance(k, yaml.ScalarNode) and k.value == str(part):
                    nxt, nxt_key = v, k
                    break
        elif isinstance(here, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(here.value):
            nxt = here.value[part]
        if nxt is None:
            break
        here, key_node = nxt, nxt_key
    if key_node is not None and not isinstance(here, yaml.ScalarNode):
        return _pos(key_node)
    return _pos(here)
