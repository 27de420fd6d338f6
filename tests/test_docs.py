"""The documentation cannot drift: README.md and docs/*.md link only to files and headings that
exist, the README stays short, and docs/cli.md lists exactly the options `--help` has.

Fast: reads Markdown and builds the CLI's parser (which imports no torch); no cohort, no training.
"""

import argparse
import re
from pathlib import Path

import pytest

from lympho.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]
README_MAX_LINES = 220

FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"`+[^`]*`+")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)(?![\w-])")


def prose_lines(path: Path) -> list[str]:
    """The file's lines with fenced code blocks blanked (kept as empty lines, so numbers hold)."""
    lines, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            lines.append("")
        else:
            lines.append("" if fenced else line)
    return lines


def headings(path: Path) -> list[tuple[int, str, int]]:
    """(level, text, line index) of every Markdown heading outside code blocks."""
    found = []
    for number, line in enumerate(prose_lines(path)):
        match = HEADING.match(line)
        if match:
            found.append((len(match.group(1)), match.group(2), number))
    return found


def github_slug(text: str) -> str:
    """The anchor GitHub gives a heading: link text kept, lower case, punctuation dropped
    (word characters, spaces and hyphens kept), spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's slug, duplicates numbered -1, -2, ... as GitHub does."""
    seen: dict[str, int] = {}
    result = set()
    for _, text, _ in headings(path):
        slug = github_slug(text)
        if slug in seen:
            seen[slug] += 1
            slug = f"{slug}-{seen[slug]}"
        else:
            seen[slug] = 0
        result.add(slug)
    return result


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every Markdown link and image outside code."""
    found = []
    for number, line in enumerate(prose_lines(path), start=1):
        for match in LINK.finditer(INLINE_CODE.sub("", line)):
            found.append((number, match.group(1)))
    return found


def test_the_documentation_pages_exist():
    names = {page.name for page in PAGES}
    for name in ("data.md", "cli.md", "dashboard.md", "method.md", "evaluation.md", "benchmarks.md",
                 "security.md", "development.md"):
        assert name in names, f"docs/{name} is missing"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for number, target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (page.parent / file_part).resolve() if file_part else page
        where = f"{page.relative_to(REPO)}:{number}: {target}"
        if not resolved.exists():
            broken.append(f"{where}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{where}: no heading with the anchor #{anchor}")
    assert not broken, "\n".join(broken)


def test_readme_links_every_docs_page():
    targets = {target.partition("#")[0] for _, target in links(REPO / "README.md")}
    missing = [f"docs/{page.name}" for page in DOCS.glob("*.md") if f"docs/{page.name}" not in targets]
    assert not missing, f"README.md does not link {missing}"


def test_readme_is_short():
    count = len((REPO / "README.md").read_text(encoding="utf-8").splitlines())
    assert count <= README_MAX_LINES, f"README.md has {count} lines; keep it to {README_MAX_LINES} (move detail to docs/)"


def test_github_slug():
    assert github_slug("Many images: the cache, GPUs and Ray clusters") == "many-images-the-cache-gpus-and-ray-clusters"
    assert github_slug("The dashboard (CPU)") == "the-dashboard-cpu"
    assert github_slug("`runs list`") == "runs-list"
    assert github_slug("Clinical weights 0.4-0.8") == "clinical-weights-04-08"


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def commands() -> dict[str, list[str]]:
    """'evaluate' -> its --options; 'runs list' -> the runs subcommand's; --help left out."""
    found = {}

    def options(parser):
        return sorted({o for a in parser._actions for o in a.option_strings if o.startswith("--") and o != "--help"})

    for name, parser in subparsers(build_parser()).items():
        found[name] = options(parser)
        for sub, subparser in subparsers(parser).items():
            found[f"{name} {sub}"] = options(subparser)
    return found


COMMANDS = commands()
CLI_MD = DOCS / "cli.md"


def own_section(command: str) -> list[str]:
    """The lines of cli.md under the heading named ``command`` (in or out of backticks), up to
    the next heading of any level."""
    lines = prose_lines(CLI_MD)
    marks = headings(CLI_MD)
    for index, (_, text, start) in enumerate(marks):
        if text.strip("` ") == command:
            end = marks[index + 1][2] if index + 1 < len(marks) else len(lines)
            return lines[start + 1:end]
    pytest.fail(f"docs/cli.md has no heading '{command}' (write '## {command}' or '### {command}')")


def list_items(lines: list[str]) -> list[str]:
    """Bulleted items, each with its indented continuation lines joined."""
    items, open_item = [], False
    for line in lines:
        if line.startswith("- "):
            items.append(line[2:])
            open_item = True
        elif open_item and line.startswith("  ") and line.strip():
            items[-1] += " " + line.strip()
        else:
            open_item = False
    return items


def test_the_cli_has_commands():
    assert {"data", "evaluate", "train", "score", "runs list"} <= set(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_cli_md_documents_every_option_under_its_command(command):
    text = "\n".join(own_section(command))
    documented = set(OPTION.findall(text))
    missing = [option for option in COMMANDS[command] if option not in documented]
    assert not missing, f"docs/cli.md, section '{command}': options {missing} are not documented"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_cli_md_option_lists_name_only_the_commands_options(command):
    """In a command's section, an item starting with options (``- `--x ...`: what it does``)
    names only options of that command."""
    wrong = []
    for item in list_items(own_section(command)):
        if item.startswith("`--"):
            head = item.split(": ", 1)[0]
            wrong += [option for option in OPTION.findall(head) if option not in COMMANDS[command]]
    assert not wrong, f"docs/cli.md, section '{command}': {sorted(set(wrong))} are not options of '{command}'"


def global_options() -> set[str]:
    """The options of ``python -m lympho`` itself, before the command (e.g. --profile)."""
    return {o for a in build_parser()._actions for o in a.option_strings if o.startswith("--") and o != "--help"}


def test_cli_md_names_no_option_that_does_not_exist():
    known = {option for options in COMMANDS.values() for option in options} | {"--help"} | global_options()
    text = "\n".join(prose_lines(CLI_MD))
    unknown = sorted(set(OPTION.findall(text)) - known)
    assert not unknown, f"docs/cli.md names options no command has: {unknown}"
    missing = sorted(global_options() - set(OPTION.findall(text)))
    assert not missing, f"docs/cli.md does not document the global options {missing}"
