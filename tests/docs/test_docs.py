"""The documentation stays true to the repository: links, named tests, resources, routes, make targets."""

import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from metering_local.template import Template

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", *DOCS, ROOT / "examples" / "README.md"]

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[(?:[^\]\n]|\][^(\n])*?\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)
_HTML_LINK = re.compile(r"""<(?:a|img)\s[^>]*?(?:href|src)\s*=\s*["']([^"']+)["']""", re.I)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def prose(text: str) -> str:
    """The page without code blocks and inline code (links there are not links)."""
    return _INLINE_CODE.sub("", _FENCE.sub("", text))


def links(page: Path) -> list[str]:
    text = prose(page.read_text())
    return _LINK.findall(text) + _REFERENCE.findall(text) + _HTML_LINK.findall(text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # link text only
    text = unicodedata.normalize("NFC", text).strip().lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found, seen = set(), {}
    for line in _FENCE.sub("", page.read_text()).splitlines():
        match = re.match(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    found |= set(re.findall(r"""<a\s+(?:name|id)=["']([^"']+)["']""", page.read_text()))
    return found


def test_there_are_pages_with_links():
    assert {p.name for p in DOCS} >= {"api.md", "architecture.md", "deploy.md"}
    assert sum(len(links(p)) for p in PAGES) > 30


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves_inside_the_repository(page):
    problems = []
    for target in links(page):
        if _SCHEME.match(target) or target.startswith("//"):
            problems.append(f"{target}: leaves the repository (only relative links to its own files)")
            continue
        path_part, _, fragment = target.partition("#")
        if path_part.startswith("/"):
            problems.append(f"{target}: absolute path; link relative to the page")
            continue
        resolved = (page.parent / path_part).resolve() if path_part else page
        if resolved != ROOT and ROOT not in resolved.parents:
            problems.append(f"{target}: outside the repository")
            continue
        if not resolved.exists():
            problems.append(f"{target}: {resolved.relative_to(ROOT)} does not exist")
            continue
        if fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            problems.append(f"{target}: no heading #{fragment} in {resolved.relative_to(ROOT)}")
    assert not problems, f"{page.relative_to(ROOT)}:\n" + "\n".join(problems)


def test_readme_links_every_doc_and_nothing_outside():
    readme = ROOT / "README.md"
    linked = {(readme.parent / t.partition("#")[0]).resolve() for t in links(readme)}
    missing = [p.name for p in DOCS if p.resolve() not in linked]
    assert not missing, f"README.md does not link {missing}"
    assert "../" not in "".join(links(readme))


def test_readme_keeps_the_two_commands_and_their_promise():
    text = (ROOT / "README.md").read_text()
    assert "With Python 3.11+ and nothing else installed:" in text
    assert re.search(
        r"^make serve\s+# creates \.venv if needed, installs, runs the service locally", text, re.M
    )
    assert re.search(r"^make test\s+# creates \.venv if needed, installs, runs every test", text, re.M)


def test_the_api_reference_links_billing():
    assert "Billing: see [billing.md](billing.md)" in (ROOT / "docs" / "api.md").read_text()


def test_every_test_named_in_the_docs_exists():
    named = set()
    for page in PAGES:
        named |= set(re.findall(r"(tests/[\w/]+\.py)::(test_\w+)", page.read_text()))
    assert len(named) >= 20
    missing = [
        f"{path}::{name}"
        for path, name in sorted(named)
        if not (ROOT / path).exists() or not re.search(rf"^\s*def {name}\(", (ROOT / path).read_text(), re.M)
    ]
    assert not missing, f"named in the docs but not found: {missing}"


def test_the_architecture_diagram_shows_every_function_table_bucket_bus_and_queue():
    text = (ROOT / "docs" / "architecture.md").read_text()
    diagrams = "\n".join(re.findall(r"```mermaid\n(.*?)```", text, re.S))
    kinds = (
        "AWS::Serverless::Function",
        "AWS::DynamoDB::Table",
        "AWS::S3::Bucket",
        "AWS::Events::EventBus",
        "AWS::SQS::Queue",
    )
    template = Template.load(ROOT / "template.yaml")
    missing = [
        name for kind in kinds for name in template.of_type(kind) if not re.search(rf"\b{name}\b", diagrams)
    ]
    assert not missing, f"docs/architecture.md's Mermaid diagram lacks {missing}"


def _normalise(path: str) -> str:
    return re.sub(r"\{[^}/]*\}", "{}", path)


def _undocumented(routes, pages) -> list[str]:
    text = _normalise("\n".join(p.read_text() for p in pages))
    documented = set(re.findall(r"(?<![\w/])(/(?:v\d|dashboard)[\w/{}]*)", text))
    return sorted(f"{r.method} {r.path}" for r in routes if _normalise(r.path).rstrip("/") not in documented)


def _routes(billing: bool):
    return [
        r
        for r in Template.load(ROOT / "template.yaml").routes()
        if r.function.startswith("Billing") == billing
    ]


def test_every_metering_route_is_in_the_api_reference():
    missing = _undocumented(_routes(billing=False), [ROOT / "docs" / "api.md"])
    assert not missing, f"routes in template.yaml that docs/api.md does not mention: {missing}"


def test_every_billing_route_is_documented():
    missing = _undocumented(_routes(billing=True), DOCS)
    assert not missing, f"billing routes in template.yaml that no page of docs/ mentions: {missing}"


def test_make_build_and_ci():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^\.PHONY:.*\bbuild\b", makefile, re.M)
    assert re.search(r"^build:", makefile, re.M)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "set -euo pipefail" in ci
    steps = re.findall(r"^make (\w+)", ci, re.M)
    assert steps[:1] == ["test"] and steps.index("validate") < steps.index("build")


def test_make_build_finds_the_templates_python():
    """The build script reads the runtime from the template (python3.12 today)."""
    runtime = Template.load(ROOT / "template.yaml").globals["Runtime"]
    assert re.fullmatch(r"python3\.\d+", runtime)
    script = (ROOT / "scripts" / "sam_build.sh").read_text()
    assert "Runtime:" in script and "pyenv" in script


def test_the_deploy_guide_gives_every_functions_permissions():
    text = (ROOT / "docs" / "deploy.md").read_text()
    section = text.split("## IAM the stack creates", 1)[1].split("\n## ", 1)[0]
    functions = Template.load(ROOT / "template.yaml").of_type("AWS::Serverless::Function")
    missing = [name for name in functions if f"`{name}`" not in section]
    assert not missing, f"docs/deploy.md's IAM section lacks {missing}"


@pytest.mark.parametrize("command", ["serve", "invoke"])
def test_every_flag_of_the_local_runner_is_documented(command):
    done = subprocess.run(
        [sys.executable, "-m", "metering_local", command, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", done.stdout)) - {"--help"}
    text = (ROOT / "docs" / "api.md").read_text()
    section = text.split("## Local runner and admin CLI", 1)[1].split("\n## ", 1)[0]
    missing = sorted(flag for flag in flags if f"`{flag}" not in section and f"{flag} " not in section)
    assert not missing, f"metering-local {command} flags missing from docs/api.md: {missing}"
