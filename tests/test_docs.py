"""The docs run: every `vramcalc ...` command in README.md and docs/*.md is executed and checked.

Conventions (also described in docs/guide.md, "How these docs are tested"):
- In a ```console block, lines starting with `$ vramcalc` are commands and the lines under each, up to the
  next `$` line, are its exact output (stdout then stderr). A line `...` in the output matches any number of
  lines. A command with no lines under it has its output left unchecked.
- In ```bash / ```sh / ```shell / unlabeled blocks, lines starting with `vramcalc` (or `$ vramcalc`) are run
  and only their exit code is checked.
- A trailing `# exit N` comment documents a non-zero exit code (default 0). Anything after a pipe or
  redirection (`|`, `>`, `&&`, `;`) is not run, and the output of such a line is not compared.
- `<!-- docs-test: skip -->` on the line before a fence skips that block.
- Rich output is rendered 100 columns wide (COLUMNS=100).
Regenerate the outputs in place with `VRAMCALC_REGEN_DOCS=1 pytest tests/test_docs.py`, then review the diff.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from vramcalc.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
REGEN = os.environ.get("VRAMCALC_REGEN_DOCS") == "1"
ENV = {"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}
TRANSCRIPT_LANGS = {"console"}
COMMAND_LANGS = {"", "bash", "sh", "shell", "zsh"}
SKIP_MARK = "<!-- docs-test: skip -->"
STOP_TOKENS = {"|", "||", "&&", ";", ">", ">>", "2>&1", "&>", "2>"}
FENCE = re.compile(r"^(```|~~~)\s*([\w+-]*)")
EXIT_COMMENT = re.compile(r"#\s*exit\s+(\d+)\s*$")

runner = CliRunner()


@dataclass
class DocCommand:
    path: Path
    lineno: int  # 1-based line of the command
    command: str
    exit_code: int
    expected: list[str] | None  # None: output not checked
    output_span: tuple[int, int] | None  # 0-based [start, end) lines of the shown output (console blocks)

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.lineno}"


def doc_files() -> list[Path]:
    files = [ROOT / "README.md"] if (ROOT / "README.md").is_file() else []
    return files + sorted((ROOT / "docs").glob("*.md"))


def _command_text(line: str) -> str | None:
    text = line.strip()
    text = text[2:].lstrip() if text.startswith("$ ") else text
    for prefix in ("vramcalc ", "python -m vramcalc "):
        if text.startswith(prefix) or text == prefix.strip():
            return text
    return None


def parse(path: Path) -> list[DocCommand]:
    """Every vramcalc command of one Markdown file, with its documented exit code and output."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[DocCommand] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang = m.group(1), m.group(2).lower()
        prev = next((x.strip() for x in reversed(lines[:i]) if x.strip()), "")
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith(fence)), len(lines))
        if prev != SKIP_MARK and (lang in TRANSCRIPT_LANGS or lang in COMMAND_LANGS):
            out += _parse_block(path, lines, i + 1, end, transcript=lang in TRANSCRIPT_LANGS)
        i = end + 1
    return out


def _parse_block(path: Path, lines: list[str], start: int, end: int, transcript: bool) -> list[DocCommand]:
    out: list[DocCommand] = []
    j = start
    while j < end:
        line = lines[j]
        cmd = _command_text(line) if (not transcript or line.startswith("$ ")) else None
        if cmd is None:
            j += 1
            continue
        lineno = j + 1
        while cmd.endswith("\\") and j + 1 < end:  # shell line continuation
            j += 1
            cmd = cmd[:-1].rstrip() + " " + lines[j].strip()
        code = EXIT_COMMENT.search(cmd)
        exit_code = int(code.group(1)) if code else 0
        j += 1
        expected, span = None, None
        if transcript:
            k = j
            while k < end and not lines[k].startswith("$ "):
                k += 1
            span = (j, k)
            shown = lines[j:k]
            while shown and not shown[-1].strip():
                shown.pop()
            expected = shown if shown else None
            j = k
        out.append(DocCommand(path, lineno, cmd, exit_code, expected, span))
    return out


def argv(command: str) -> tuple[list[str], bool]:
    """The arguments after `vramcalc`, and whether the line was cut at a pipe or redirection."""
    tokens = shlex.split(command, comments=True)
    cut = False
    for n, tok in enumerate(tokens):
        if tok in STOP_TOKENS or tok.startswith(">") or tok.startswith("2>"):
            tokens, cut = tokens[:n], True
            break
    if tokens[:3] == ["python", "-m", "vramcalc"]:
        return tokens[3:], cut
    return tokens[1:], cut


def run(command: str) -> tuple[int, list[str]]:
    args, _ = argv(command)
    result = runner.invoke(app, args, env=ENV)
    text = result.stdout + (result.stderr or "")
    lines = [x.rstrip() for x in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return result.exit_code, lines


def matches(expected: list[str], actual: list[str]) -> bool:
    """Line-by-line equality (trailing spaces ignored), where a line `...` matches any run of lines."""
    exp = [x.rstrip() for x in expected]
    if "..." not in exp:
        return exp == actual
    head, rest = exp[: exp.index("...")], exp[exp.index("...") + 1 :]
    if actual[: len(head)] != head:
        return False
    return any(matches(rest, actual[k:]) for k in range(len(head), len(actual) + 1))


COMMANDS = [c for f in doc_files() for c in parse(f)]


def test_docs_have_commands() -> None:
    assert any(c.path.parent.name == "docs" for c in COMMANDS), "docs/*.md lost its vramcalc commands"


@pytest.mark.parametrize("doc", COMMANDS, ids=[c.id for c in COMMANDS])
def test_doc_command(doc: DocCommand) -> None:
    code, actual = run(doc.command)
    assert code == doc.exit_code, f"{doc.id}: `{doc.command}` exited {code}\n" + "\n".join(actual[-10:])
    _, cut = argv(doc.command)
    if doc.expected is not None and not cut and not REGEN:
        assert matches(doc.expected, actual), (
            f"{doc.id}: the output of `{doc.command}` differs from the docs; regenerate with "
            "VRAMCALC_REGEN_DOCS=1 and review the diff\n" + "\n".join(actual)
        )


def _regenerated(expected: list[str], actual: list[str]) -> list[str]:
    """New shown output: the actual output, keeping an elision (`...`) with as many head and tail lines."""
    if matches(expected, actual):
        return expected
    if "..." not in expected:
        return actual
    first, last = expected.index("..."), len(expected) - 1 - expected[::-1].index("...")
    tail = len(expected) - last - 1
    return actual[:first] + ["..."] + (actual[-tail:] if tail else [])


@pytest.mark.skipif(not REGEN, reason="set VRAMCALC_REGEN_DOCS=1 to rewrite the outputs shown in the docs")
def test_regenerate_doc_outputs() -> None:
    for path in doc_files():
        lines = path.read_text(encoding="utf-8").splitlines()
        edits = []
        for doc in parse(path):
            if doc.output_span is None or doc.expected is None or argv(doc.command)[1]:
                continue
            _, actual = run(doc.command)
            edits.append((doc.output_span, _regenerated(doc.expected, actual)))
        for (start, end), new in sorted(edits, reverse=True):
            # keep one blank line between an output and the next `$` command, as written
            lines[start:end] = new + ([""] if end < len(lines) and lines[end].startswith("$ ") else [])
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _commands(cmd: object, path: list[str]) -> list[list[str]]:
    out = [path]
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        out += _commands(sub, [*path, name])
    return out


@pytest.mark.parametrize(
    "path", _commands(typer.main.get_command(app), []), ids=lambda p: " ".join(["vramcalc", *p])
)
def test_every_command_has_help_with_an_example(path: list[str]) -> None:
    result = runner.invoke(app, [*path, "--help"], env=ENV)
    assert result.exit_code == 0, result.output
    assert "Example" in result.stdout, f"`vramcalc {' '.join(path)} --help` shows no example"


# --- the parser and matcher themselves ---------------------------------------------------------------

SAMPLE = """\
```bash
pip install vramcalc
vramcalc estimate mistral-7b --gpu rtx4090 --check  # exit 1
vramcalc estimate mistral-7b \\
  --method qlora
vramcalc estimate mistral-7b --format json | jq .peak_bytes
```

<!-- docs-test: skip -->
```console
$ vramcalc estimate my-own-model
```

```console
$ vramcalc --version
vramcalc 0.1.0

$ vramcalc explain mistral-7b --only weights
```
"""


def test_parse_finds_commands_exit_codes_and_outputs(tmp_path: Path) -> None:
    doc = tmp_path / "sample.md"
    doc.write_text(SAMPLE, encoding="utf-8")
    found = [(c.lineno, c.command, c.exit_code, c.expected) for c in parse(doc)]
    assert found == [
        (3, "vramcalc estimate mistral-7b --gpu rtx4090 --check  # exit 1", 1, None),
        (4, "vramcalc estimate mistral-7b --method qlora", 0, None),  # joined continuation
        (6, "vramcalc estimate mistral-7b --format json | jq .peak_bytes", 0, None),
        (15, "vramcalc --version", 0, ["vramcalc 0.1.0"]),  # the blank separator line is not output
        (18, "vramcalc explain mistral-7b --only weights", 0, None),  # nothing shown: not compared
    ]
    assert argv("vramcalc estimate mistral-7b --format json | jq .peak_bytes") == (
        ["estimate", "mistral-7b", "--format", "json"],
        True,
    )


def test_ellipsis_matches_any_run_of_lines() -> None:
    assert matches(["a", "...", "z"], ["a", "b", "c", "z"])
    assert matches(["a", "...", "z"], ["a", "z"])
    assert not matches(["a", "...", "z"], ["a", "b"])
    assert not matches(["a", "b"], ["a", "b", "c"])
    # Regeneration keeps the elision with as many head and tail lines as before.
    assert _regenerated(["a", "...", "z"], ["A", "b", "Z"]) == ["A", "...", "Z"]


def test_readme_shows_the_published_tables() -> None:
    """Issue 16: the README's accuracy section shows benchmarks/results/published.md's overall and per-group
    tables, copied by `benchmarks/published.py --readme`; a rerun that changes them must update the README."""
    from bench_module import load_benchmark

    published = load_benchmark("published", "published")
    md = (ROOT / "benchmarks" / "results" / "published.md").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split(published.README_START, 1)[1].split(published.README_END, 1)[0]
    assert block.strip() == published.summary_tables(md)
    assert "| tensor peak vs allocated/active |" in block and "| peft MetaMathQA |" in block
