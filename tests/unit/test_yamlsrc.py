"""The YAML loader every user-supplied document goes through: hostile input gives Problems.

No expansion of aliases, no recursion past MAX_DEPTH, and every parser or
constructor error (YAMLError or not) as one `line N: field: rule` Problem.
"""

import subprocess
import sys
import textwrap

import pytest

from provisioner import yamlsrc

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(9))


def rules(text):
    doc = yamlsrc.load(text)
    return doc, [str(p) for p in doc.problems]


def test_plain_documents_still_load_with_lines():
    doc, problems = rules("site:\n  subdomain: simkes\n  tls: true\nsteps:\n  - key: a\n")
    assert problems == [] and doc.data["site"]["tls"] is True
    assert doc.line_of(("site", "tls")) == 3 and doc.line_of(("steps", 0, "key")) == 5


def test_the_alias_bomb_is_refused_before_anything_expands():
    assert len(BOMB) < 1300  # 9**10 leaves if expanded
    doc, problems = rules(BOMB)
    assert doc.data is None
    # The first anchor and the first alias, not one line per alias of the bomb.
    assert problems == ["line 1: a: anchors are not allowed (&a)", "line 2: b[0]: aliases are not allowed (*a)"]


def test_the_alias_bomb_stays_within_a_small_memory_limit():
    """In a child limited to 512 MB of address space the loader still answers."""
    script = textwrap.dedent(f"""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (512 * 2**20, 512 * 2**20))
        from provisioner import yamlsrc
        doc = yamlsrc.load({BOMB!r})
        print(doc.data is None, doc.problems[0])
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("True line 1: a: anchors are not allowed")


@pytest.mark.parametrize("text", ["a: &x 1\n", "a: *x\n", "<<: *base\nb: 1\n", "- !!str &t x\n"])
def test_any_anchor_or_alias_is_refused(text):
    doc, problems = rules(text)
    assert doc.data is None and problems
    assert all("are not allowed" in p or "not valid YAML" in p for p in problems)


@pytest.mark.parametrize("text", ["[" * 20000 + "]" * 20000, "{a: " * 20000 + "1" + "}" * 20000,
                                  "".join("  " * i + f"k{i}:\n" for i in range(200)) + "  " * 200 + "v\n",
                                  "- " * 5000 + "x\n"])
def test_deep_nesting_is_a_problem_not_a_recursion_error(text):
    doc, problems = rules(text)
    assert doc.data is None
    assert len(problems) == 1 and problems[0].endswith(f"nested deeper than {yamlsrc.MAX_DEPTH} levels")
    assert problems[0].startswith("line ")


def test_nesting_up_to_the_limit_is_fine():
    depth = yamlsrc.MAX_DEPTH
    doc, problems = rules("[" * depth + "]" * depth)
    assert problems == [] and doc.data is not None


NOT_READ = "not valid YAML: value cannot be read as"


@pytest.mark.parametrize("text,expected", [
    ("a:\n  b: 2024-13-01\n", f"line 2: a.b: {NOT_READ} timestamp: month must be in 1..12"),
    ("a: !!bool maybe\n", f"line 1: a: {NOT_READ} bool: 'maybe'"),
    ("a: !!timestamp soon\n", f"line 1: a: {NOT_READ} timestamp: 'soon'"),
    ("a: !!float abc\n", f"line 1: a: {NOT_READ} float: could not convert string to float: 'abc'"),
    ("n: " + "9" * 5000 + "\n", f"line 1: n: {NOT_READ} int: Exceeds the limit (4300 digits)"),
    ("a: !!python/object:os.system x\n", "line 1: a: not valid YAML: could not determine a constructor"),
    ("a: [unclosed\n", "line 2: (document): not valid YAML: while parsing a flow sequence, expected ',' or ']'"),
    ("a: 1\n---\nb: 2\n",
     "line 2: (document): not valid YAML: expected a single document in the stream, but found another document"),
    ("a: \x00\n", "(document): not valid YAML: unacceptable character #x0000"),
    ("a: b: c\n", "line 1: (document): not valid YAML: mapping values are not allowed here"),
])
def test_every_parser_error_is_one_line(text, expected):
    doc, problems = rules(text)
    assert doc.data is None and len(problems) == 1
    assert problems[0].startswith(expected), problems[0]
    assert "\n" not in problems[0]


def test_duplicate_keys_and_odd_keys_are_still_reported():
    _, problems = rules("a: 1\nb:\n  c: 1\n  c: 2\n")
    assert problems == ["line 4: b.c: duplicate key"]
    _, problems = rules("? [a]\n: 1\n")
    assert problems[0] == "line 1: (document): keys must be plain names"


# --- libyaml first, the pure-Python parser for any problem -------------------------------

from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = sorted(p for p in [*(ROOT / "examples").rglob("*.yaml"), *(ROOT / "sop").rglob("*.yaml"),
                               *(ROOT / "inventory").rglob("*.yml")] if p.is_file())


@pytest.mark.skipif(not yamlsrc._FAST, reason="PyYAML built without libyaml")
@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_both_parsers_read_every_shipped_document_alike(path):
    text = path.read_text()
    fast, pure = yamlsrc._load(text, fast=True), yamlsrc._load(text, fast=False)
    assert (fast.data, fast.lines, fast.problems) == (pure.data, pure.lines, pure.problems)


@pytest.mark.skipif(not yamlsrc._FAST, reason="PyYAML built without libyaml")
def test_a_valid_document_is_read_once_by_libyaml(monkeypatch):
    calls = []
    real = yamlsrc._load
    monkeypatch.setattr(yamlsrc, "_load", lambda text, fast: calls.append(fast) or real(text, fast))
    assert yamlsrc.load("a: 1\nb: [x, y]\n").data == {"a": 1, "b": ["x", "y"]}
    assert calls == [True]


@pytest.mark.skipif(not yamlsrc._FAST, reason="PyYAML built without libyaml")
@pytest.mark.parametrize("text", ["a: [1, 2\n", "a: 1\na: 2\n", "a: &x 1\nb: *x\n", "d: 2024-13-01\n",
                                  "a: 1\n---\nb: 2\n", "a:\n  - b\n c: d\n"])
def test_a_problem_reads_as_the_pure_python_parser_says_it(text, monkeypatch):
    calls = []
    real = yamlsrc._load
    monkeypatch.setattr(yamlsrc, "_load", lambda t, fast: calls.append(fast) or real(t, fast))
    doc = yamlsrc.load(text)
    assert doc.problems and calls == [True, False]
    assert [str(p) for p in doc.problems] == [str(p) for p in real(text, fast=False).problems]
