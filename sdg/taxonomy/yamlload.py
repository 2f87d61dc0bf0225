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

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_DEPTH = 64


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
                raise YamlProblem(f"YAML is nested deeper than {MAX_DEPTH} levels; a qna.yaml needs 4", line, col)
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
            raise YamlProblem(f"YAML is nested deeper than {MAX_DEPTH} levels; a qna.yaml needs 4", line, col)
        for kid in _children(node):
            if id(kid) not in size:
                stack.append((kid, False))


def load_yaml(text: str, max_nodes: int = 200_000) -> LoadedYaml:
    """Parse one YAML document safely; raises YamlProblem with the position of the first problem."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return LoadedYaml(None, None)
        check_graph(node, max_nodes)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = " ".join(p for p in (exc.context, exc.problem) if p)
        raise YamlProblem(f"YAML syntax error: {what or exc}", line, col) from None
    except yaml.YAMLError as exc:
        raise YamlProblem(f"YAML error: {exc}") from None
    except RecursionError:
        raise YamlProblem(f"YAML is nested deeper than {MAX_DEPTH} levels") from None
    finally:
        loader.dispose()
    return LoadedYaml(data, node)


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
