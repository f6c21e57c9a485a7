"""The docs against the code: every `skillgraft …` command and option, every `make` target and every repo path the
README and docs/ show in code exists. (The example config equals the defaults: tests/test_config.py.)"""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
import typer

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "infra" / "README.md"]


def code_spans(text: str) -> list[str]:
    """Every fenced code block's lines and every inline `code` span of a markdown text."""
    out: list[str] = []
    fenced = re.compile(r"^```.*?$(.*?)^```", re.S | re.M)
    for block in fenced.findall(text):
        out += [line.strip() for line in block.splitlines() if line.strip()]
    out += re.findall(r"`([^`\n]+)`", fenced.sub("", text))
    return out


def commands_in(span: str) -> list[list[str]]:
    """The `skillgraft …` invocations in one code span, each as its words (a span may chain them with && or ;)."""
    found = []
    for part in re.split(r"&&|;|\|\||\|", span):
        words = part.strip().lstrip("$ ").split()
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # ENV=value prefixes
            words = words[1:]
        if words and words[0] in (".venv/bin/skillgraft", "skillgraft"):
            found.append(words[1:])
    return found


def documented() -> list[tuple[str, list[str]]]:
    return [(f"{doc.relative_to(ROOT)}: `{span}`", words) for doc in DOCS for span in code_spans(doc.read_text())
            for words in commands_in(span)]  # fmt: skip


@pytest.fixture(scope="module")
def cli() -> click.Group:
    from skillgraft.cli import app

    return typer.main.get_command(app)


def is_group(cmd) -> bool:
    return hasattr(cmd, "list_commands")  # typer's groups are its own class, not click.Group


def resolve(cli: click.Group, words: list[str]) -> tuple[click.Command, list[str]]:
    """The command the words name (descending into groups) and the words after it."""
    cmd: click.Command = cli
    rest = list(words)
    while is_group(cmd) and rest and not rest[0].startswith("-"):
        name = rest.pop(0)
        sub = cmd.get_command(click.Context(cmd), name)
        assert sub is not None, f"no command {name!r} (commands: {sorted(cmd.list_commands(click.Context(cmd)))})"
        cmd = sub
    return cmd, rest


def test_the_docs_show_commands_at_all() -> None:
    names = {words[0] for _, words in documented() if words}
    assert {"demo", "run", "submit", "status", "history", "promote", "rollback", "server", "guard"} <= names


def test_every_documented_command_and_option_exists(cli: click.Group) -> None:
    problems = []
    for where, words in documented():
        if not words or words[0] in ("--help",) or words[0].startswith("<"):
            continue
        try:
            cmd, rest = resolve(cli, words)
        except AssertionError as e:
            problems.append(f"{where}: {e}")
            continue
        if is_group(cmd):
            continue  # `skillgraft guard` alone: the group's help
        options = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")} | {"--help"}
        for word in rest:
            flag = word.split("=", 1)[0]
            if flag.startswith("--") and re.fullmatch(r"--[a-z][a-z0-9-]*", flag) and flag not in options:
                problems.append(f"{where}: `skillgraft {cmd.name}` has no option {flag} (it has {sorted(options)})")
    assert not problems, "\n".join(problems)


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z0-9_-]*):", (ROOT / "Makefile").read_text(), re.M))


def test_every_documented_make_target_exists() -> None:
    targets = makefile_targets()
    missing = []
    for doc in DOCS:
        for span in code_spans(doc.read_text()):
            for target in re.findall(r"(?:^|&&|;)\s*make ([a-z][a-z0-9_-]*)", span):
                if target not in targets:
                    missing.append(f"{doc.relative_to(ROOT)}: `make {target}`")
    assert {"demo", "test", "lint"} <= targets
    assert not missing, f"documented make targets the Makefile lacks: {missing}"


def test_every_repo_path_the_docs_name_exists() -> None:
    """A path into the repo shown in code (docs/…, benchmarks/…, deployments/…, skillgraft/….py) exists."""
    prefixes = ("docs/", "benchmarks/", "deployments/", "infra/", "skillgraft/", "tasks/", "flows/", "tests/")
    missing = []
    pattern = re.compile(
        r"(?<![\w./-])((?:" + "|".join(map(re.escape, prefixes)) + r")[\w./-]*\.(?:py|md|ya?ml|json|sh))"
    )
    for doc in DOCS + [ROOT / "Makefile", ROOT / "deployments" / "__init__.py"]:
        for path in pattern.findall(doc.read_text()):
            if "<" in path or "*" in path:
                continue
            if not (ROOT / path).exists():
                missing.append(f"{doc.relative_to(ROOT)}: {path}")
    assert not missing, f"paths the docs name that do not exist: {missing}"
