"""Where a spec came from: the YAML file and the line of every node, for ``file:line`` messages."""

from __future__ import annotations

from pathlib import Path

import yaml


class SpecSource:
    """The YAML file a spec came from, with the line of every node (1-based)."""

    def __init__(self, path: Path, text: str, lines: dict[tuple, int]) -> None:
        self.path = path
        self.text = text
        self.lines = lines

    def where(self, loc: tuple) -> str:
        for n in range(len(loc), -1, -1):
            if loc[:n] in self.lines:
                return f"{self.path.name}:{self.lines[loc[:n]]}"
        return f"{self.path.name}:1"


def _dotted(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _node_lines(
    node: yaml.Node, loc: tuple, lines: dict[tuple, int], problems: list[tuple[tuple, str]]
) -> None:
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                problems.append((loc + (key,), f"duplicate key {key!r}"))
            seen.add(key)
            lines[loc + (key,)] = key_node.start_mark.line + 1
            _node_lines(value_node, loc + (key,), lines, problems)
            lines[loc + (key,)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _node_lines(item, loc + (i,), lines, problems)
