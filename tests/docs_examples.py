"""Run the examples of the documentation: the code blocks marked ``<!-- test -->``.

A page's marked blocks run in order in one fresh directory, so a later block can use the files
an earlier one wrote.  Two kinds of block run:

```console`` blocks
    Lines starting with ``$ `` are commands, run by bash with ``moe-netsim`` and ``python`` of
    this environment first on PATH (a plain ``moe-netsim ...`` line, with nothing for the shell
    to do, runs in-process: same output, no interpreter start); a command ending in
    ``<<'EOF'`` takes the lines up to ``EOF`` as its input.  The lines after a command, up to
    the next one, are its expected output (stdout and stderr together, as a terminal shows
    them).  ``...`` alone on a line
    stands for any number of lines, ``...`` inside a line for any text; ``[exit N]`` as the last
    line says the command exits with N (otherwise it must exit with 0).

```python`` blocks
    Executed in one namespace per page.  When the next block is a ```` ```text ```` block marked
    ``<!-- output -->``, what the code prints must match it (with the same ``...`` rules).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_MARK = "<!-- test -->"
OUTPUT_MARK = "<!-- output -->"
_FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    marks: tuple[str, ...]  # the marker comments right before the fence

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """Every fenced block of a Markdown page, with the marker comments just before it."""
    lines = page.read_text().splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start = i
        i += 1
        body: list[str] = []
        while i < len(lines) and lines[i].rstrip() != "```":
            body.append(lines[i])
            i += 1
        j, marks = start - 1, []
        while j >= 0 and not lines[j].strip():
            j -= 1
        while j >= 0 and lines[j].strip() in (TEST_MARK, OUTPUT_MARK):
            marks.append(lines[j].strip())
            j -= 1
        out.append(Block(page, start + 1, m.group(1), "\n".join(body) + "\n", tuple(marks)))
        i += 1
    return out


def matches(expected: str, actual: str) -> bool:
    """``actual`` fits ``expected``: ``...`` lines match any lines, ``...`` in a line any text."""
    pattern = []
    for line in expected.strip("\n").splitlines():
        if line.strip() == "...":
            pattern.append(r"(?:.*\n)*?")
        else:
            parts = [re.escape(p) for p in line.rstrip().split("...")]
            pattern.append("[ \t]*" + ".*?".join(parts) + r"[ \t]*\n")
    text = "".join(line.rstrip() + "\n" for line in actual.strip("\n").splitlines())
    return re.fullmatch("".join(pattern), text) is not None


def console_steps(text: str) -> list[tuple[str, str, int]]:
    """(command, expected output, expected exit code) for each ``$`` line of a console block."""
    steps: list[tuple[str, list[str], int]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if line.startswith("$ "):
            cmd = [line[2:]]
            here = re.search(r"<<\s*'?(\w+)'?\s*$", line)
            while here and i < len(lines):
                cmd.append(lines[i])
                i += 1
                if cmd[-1] == here.group(1):
                    break
            while cmd[-1].endswith("\\") and i < len(lines):
                cmd.append(lines[i])
                i += 1
            steps.append(("\n".join(cmd), [], 0))
        elif steps:
            exit_code = re.fullmatch(r"\[exit (\d+)\]", line.strip())
            if exit_code:
                c, out, _ = steps[-1]
                steps[-1] = (c, out, int(exit_code.group(1)))
            else:
                steps[-1][1].append(line)
        else:
            raise AssertionError(f"console output before the first $ command: {line!r}")
    return [(c, "\n".join(out), code) for c, out, code in steps]


def environment() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            "PYTHONPATH": str(ROOT), "COLUMNS": "100", "MPLBACKEND": "Agg"}


def _in_process(argv: list[str], cwd: Path) -> tuple[int, str]:
    """``moe-netsim ARGV`` run in this process (it saves the interpreter start of a subprocess)."""
    from experiments.cli import main

    out = io.StringIO()
    old = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        os.chdir(old)
    return int(code or 0), out.getvalue()


def run_command(cmd: str, cwd: Path) -> tuple[int, str]:
    """(exit code, stdout and stderr) of one console command, as a user's shell would run it."""
    words = shlex.split(cmd) if not re.search(r"[|&;<>$`*(){}\\\n]", cmd) else []
    if words[:1] == ["moe-netsim"]:
        code, out = _in_process(words[1:], cwd)
    else:
        r = subprocess.run(["bash", "-c", cmd], cwd=cwd, env=environment(), text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
        code, out = r.returncode, r.stdout
    return code, out.replace(f"{cwd}/", "").replace(str(cwd), ".")


def run_console(block: Block, cwd: Path) -> None:
    for cmd, expected, code in console_steps(block.text):
        actual, out = run_command(cmd, cwd)
        assert actual == code, f"{block.where}: `{cmd}` exited with {actual}, not {code}:\n{out}"
        assert matches(expected, out), (
            f"{block.where}: `{cmd}` printed\n{out}\nnot what the page shows:\n{expected}")


def run_python(block: Block, namespace: dict[str, object], expected: str | None,
               cwd: Path) -> None:
    out = io.StringIO()
    old = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(block.text, block.where, "exec"), namespace)
    finally:
        os.chdir(old)
    if expected is not None:
        assert matches(expected, out.getvalue()), (
            f"{block.where}: printed\n{out.getvalue()}\nnot what the page shows:\n{expected}")


def run_page(page: Path, cwd: Path) -> int:
    """Run every marked block of ``page`` in ``cwd``; return how many ran."""
    found = blocks(page)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    ran = 0
    for k, b in enumerate(found):
        if TEST_MARK not in b.marks:
            continue
        if b.lang == "console":
            run_console(b, cwd)
        elif b.lang == "python":
            nxt = found[k + 1] if k + 1 < len(found) else None
            expected = nxt.text if nxt and OUTPUT_MARK in nxt.marks else None
            run_python(b, namespace, expected, cwd)
        else:
            raise AssertionError(f"{b.where}: only console and python blocks can be tested")
        ran += 1
    return ran
