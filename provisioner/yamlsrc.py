"""Load YAML while remembering the line of every key, so errors can say `file:line`.

PyYAML forgets positions once it builds Python objects. We compose the node
tree first, record where each key sits (and any duplicate key, which PyYAML
would silently resolve to the last value), then construct the plain data.

Every YAML the toolkit reads from a person goes through `load`, which is safe
on hostile input: the parser's event stream is scanned before anything is
composed, so anchors and aliases (a 1 KB "billion laughs" expands to
gigabytes) and nesting deeper than MAX_DEPTH (the composer recurses, and
20,000 brackets end in a RecursionError) are refused as Problems; and any
error the parser or a scalar constructor raises, YAMLError or not, becomes
one "not valid YAML" Problem.
"""

from dataclasses import dataclass

import yaml

# Deeper than any document the toolkit reads (requests nest 2 levels, SOPs 5),
# and far below the interpreter's recursion limit.
MAX_DEPTH = 64

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


class _Frame:
    """Where the event scan is inside one open mapping or sequence."""

    __slots__ = ("mapping", "key", "index", "want_key")

    def __init__(self, mapping):
        self.mapping, self.key, self.index, self.want_key = mapping, None, 0, mapping

    def place(self):
        return self.key if self.mapping else self.index

    def node_done(self):
        if self.mapping:
            self.want_key = not self.want_key
        else:
            self.index += 1


def _scan(text, fast=False):
    """Problems found in the event stream alone: anchors, aliases, depth.

    Runs before composing, so nothing is expanded and nothing recurses; it
    stops at the first nesting too deep (scanning on would only cost time).
    """
    problems, stack, seen = [], [], set()
    node_events = (yaml.ScalarEvent, yaml.AliasEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent)
    for event in yaml.parse(text, Loader=yaml.CSafeLoader if fast else yaml.SafeLoader):
        if isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            stack.pop()
            if stack:
                stack[-1].node_done()
            continue
        if not isinstance(event, node_events):
            continue
        top = stack[-1] if stack else None
        is_key = top is not None and top.mapping and top.want_key
        path = tuple(f.place() for f in (stack[:-1] if is_key else stack))[:8]
        line = event.start_mark.line + 1
        # The first anchor and the first alias say enough; a bomb has thousands.
        if isinstance(event, yaml.AliasEvent):
            if "alias" not in seen:
                seen.add("alias")
                problems.append(Problem(field_name(path), f"aliases are not allowed (*{event.anchor})", line))
        elif event.anchor is not None and "anchor" not in seen:
            seen.add("anchor")
            problems.append(Problem(field_name(path), f"anchors are not allowed (&{event.anchor})", line))
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            if len(stack) >= MAX_DEPTH:
                problems.append(Problem(field_name(path), f"nested deeper than {MAX_DEPTH} levels", line))
                return problems
            if is_key:
                top.key = "?"
            stack.append(_Frame(isinstance(event, yaml.MappingStartEvent)))
            continue
        if is_key:
            top.key = event.value if isinstance(event, yaml.ScalarEvent) else "?"
        if top is not None:
            top.node_done()
    return problems


class _Constructing:
    """Scalar constructors that fail as YAMLErrors carrying the node's line.

    SafeLoader's constructors raise ValueError (`2024-13-01`, a 5,000-digit
    integer), KeyError (`!!bool maybe`) or AttributeError (`!!timestamp x`).
    """

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except Exception as err:  # any constructor failure is the input's fault
            kind = str(node.tag).rsplit(":", 1)[-1]
            if isinstance(err, ValueError) and str(err):
                detail = str(err).split(";")[0]
            else:
                detail = repr(node.value)[:60] if isinstance(node, yaml.ScalarNode) else kind
            raise yaml.constructor.ConstructorError(
                None, None, f"value cannot be read as {kind}: {detail}", node.start_mark) from None


class _Loader(_Constructing, yaml.SafeLoader):
    """The pure-Python parser: its error messages are the ones every Problem quotes."""


# libyaml's parser (when PyYAML was built with it) reads the same documents into the
# same nodes about ten times faster; audits and plans re-read every stored request.
_FAST = getattr(yaml, "__with_libyaml__", False)
if _FAST:
    class _FastLoader(_Constructing, yaml.CSafeLoader):
        """The libyaml parser, used first; any problem is read again by _Loader."""


def _field_at(lines, line):
    """The deepest key path that starts on `line`, for errors that only know a line."""
    paths = [p for p, n in lines.items() if n == line]
    return field_name(max(paths, key=len)) if paths else "(document)"


def load(text):
    """Parse one YAML document from text. Every syntax or value error becomes a Problem.

    A document is read with libyaml first where PyYAML has it; one with any problem is
    read again by the pure-Python parser, so a problem always reads the same whichever
    parser the machine has."""
    if _FAST:
        document = _load(text, fast=True)
        if not document.problems:
            return document
    return _load(text, fast=False)


def _load(text, fast):
    lines, problems = {(): 1}, []
    try:
        problems = _scan(text, fast)
        if problems:
            return Document(None, lines, problems)
        loader = (_FastLoader if fast else _Loader)(text)
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
        # "expected a single document in the stream" + "but found another document".
        parts = [getattr(err, "context", None), getattr(err, "problem", None)]
        reason = ", ".join(p for p in parts if p) or str(err)
        field = _field_at(lines, line) if line else "(document)"
        problems.append(Problem(field, f"not valid YAML: {_one_line(reason)}", line))
        return Document(None, lines, problems)
    except (RecursionError, MemoryError):
        # Not reachable through the checks above; kept so no input ever shows a traceback.
        problems.append(Problem("(document)", "not valid YAML: too large or nested too deeply"))
        return Document(None, lines, problems)
    except (ValueError, TypeError, UnicodeError) as err:
        problems.append(Problem("(document)", f"not valid YAML: {_one_line(str(err))}"))
        return Document(None, lines, problems)
    return Document(data, lines, problems)


def _one_line(text):
    return " ".join(str(text).split())[:200]
