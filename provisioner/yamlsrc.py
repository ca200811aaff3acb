"""Load YAML while remembering the line of every key, so errors can say `file:line`.

PyYAML forgets positions once it builds Python objects. We compose the node
tree first, record where each key sits (and any duplicate key, which PyYAML
would silently resolve to the last value), then construct the plain data.
"""

from dataclasses import dataclass

import yaml

# A path into a document: ("site", "subdomain") or ("steps", 4, "actor").
Path = tuple


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input: which field, which rule, which line."""

    field: str
    rule: str
    line: int | None = None

    def __str__(self):
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.field}: {self.rule}"


def field_name(path):
    """("steps", 4, "actor") -> "steps[4].actor"."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(document)"


@dataclass
class Document:
    """Parsed YAML data plus the line of each key path (1-based)."""

    data: object
    lines: dict
    problems: list

    def line_of(self, path):
        """Line of the key at `path`, or of its nearest parent that exists."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), 1)


def _walk(node, path, lines, problems):
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is None:
                problems.append(Problem(field_name(path), "keys must be plain names",
                                        key_node.start_mark.line + 1))
                continue
            if key in seen:
                problems.append(Problem(field_name(path + (key,)), "duplicate key",
                                        key_node.start_mark.line + 1))
            seen.add(key)
            lines[path + (key,)] = key_node.start_mark.line + 1
            _walk(value_node, path + (key,), lines, problems)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[path + (index,)] = item.start_mark.line + 1
            _walk(item, path + (index,), lines, problems)


def load(text):
    """Parse one YAML document from text. Syntax errors become Problems, not exceptions."""
    lines, problems = {(): 1}, []
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return Document(None, lines, problems)
            _walk(node, (), lines, problems)
            data = loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        line = mark.line + 1 if mark else None
        reason = getattr(err, "problem", None) or str(err)
        problems.append(Problem("(document)", f"not valid YAML: {reason}", line))
        return Document(None, lines, problems)
    return Document(data, lines, problems)
