"""No secret-looking literal in the Kubernetes files, the Dockerfile, the docs or the rendered
chart: passwords only come from Secrets created at deploy time."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCANNED = sorted(
    [
        REPO / "Dockerfile",
        REPO / ".dockerignore",
        REPO / "docs" / "deploy.md",
        REPO / "scripts" / "ensure-helm.sh",
        *(REPO / "helm-values").glob("*.yaml"),
        *(p for p in (REPO / "charts" / "finpipe-workers").rglob("*") if p.is_file()),
        # Not this file: its patterns and examples are the detector itself.
        *(
            p
            for p in Path(__file__).parent.iterdir()
            if p.suffix in {".py", ".txt"} and p.name != Path(__file__).name
        ),
    ]
)

# Key names whose value is a credential.
_SECRET_KEY = r"[\w.-]*(?:password|passwd|pwd|secret[_-]?key|api[_-]?key|token|private[_-]?key)"
# A value that is not a secret literal: empty, null, a boolean or number (`...Token: false`),
# or a reference to a shell or environment variable.
_NOT_LITERAL = re.compile(r"""^(?:|~|null|true|false|\d+|""|''|["']?\$[({]?\w.*)$""", re.I)
_RULES = [
    ("private key block", re.compile("-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    ("AWS access key id", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("GitHub token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b")),
    ("Google API key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b")),
    ("Slack token", re.compile(r"\bxox[abprs]-[0-9A-Za-z-]{10,}")),
    ("credentials in a URL", re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:[^/\s@'\"$]+@")),
]
# `password: hunter2`, `password=hunter2`, `--from-literal=password=hunter2`
_ASSIGNMENT = re.compile(rf"(?i)\b({_SECRET_KEY})\b[\"']?\s*[:=]\s*(\S+)")


def findings(text: str) -> list[str]:
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.split(" #", 1)[0]
        for name, rule in _RULES:
            if rule.search(stripped):
                out.append(f"line {lineno}: {name}")
        for match in _ASSIGNMENT.finditer(stripped):
            value = match.group(2).rstrip(",;)")
            if not _NOT_LITERAL.match(value):
                out.append(f"line {lineno}: literal for {match.group(1)}")
    return out


def secret_objects(text: str) -> list[str]:
    """Kubernetes Secret objects carrying data inline (in any YAML document of the text)."""
    out = []
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError:
        return out
    for doc in docs:
        if (
            isinstance(doc, dict)
            and doc.get("kind") == "Secret"
            and (doc.get("data") or doc.get("stringData"))
        ):
            out.append(doc.get("metadata", {}).get("name", "?"))
    return out


@pytest.mark.parametrize("path", SCANNED, ids=lambda p: str(p.relative_to(REPO)))
def test_no_secret_literal(path: Path) -> None:
    text = path.read_text()
    assert not findings(text), f"{path.relative_to(REPO)}: {findings(text)}"
    if path.suffix == ".yaml" and "templates" not in path.parts:
        assert not secret_objects(text), f"{path.relative_to(REPO)} defines a Secret with data"


def test_rendered_chart_has_no_secret(rendered) -> None:
    text = yaml.safe_dump_all(rendered)
    assert not findings(text)
    assert not [o for o in rendered if o["kind"] == "Secret"]


# The detector itself: these must be caught (built from pieces so this file stays clean).
_PW = "pass" + "word"
_CAUGHT = [
    f"{_PW}: hunter2hunter2",
    f"  postgresql{_PW.capitalize()}: s3cr3t",
    f"--from-literal={_PW}=hunter2",
    f"DB_{_PW.upper()}=abc123",
    "postgresql://finpipe:" + "hunter2" + "@db:5432/finpipe",
    "-----BEGIN RSA " + "PRIVATE KEY-----",
    "AKIA" + "ABCDEFGHIJKLMNOP",
    "api_key: " + "x" * 20,
]
_CLEAN = [
    f'--from-literal={_PW}="$FINPIPE_PG_PASSWORD"',
    f"{_PW}Secret:",
    f"  key: {_PW}",
    f"{_PW}: ~",
    f'{_PW}: ""',
    f"FINPIPE_PG_{_PW.upper()}=$(cat /run/secret)",
    "secretKeyRef: {name: finpipe-pg-app, key: " + _PW + "}",
    "postgresql://finpipe@db:5432/finpipe",
]


@pytest.mark.parametrize("line", _CAUGHT)
def test_detector_catches(line: str) -> None:
    assert findings(line), line


@pytest.mark.parametrize("line", _CLEAN)
def test_detector_allows_references(line: str) -> None:
    assert not findings(line), findings(line)


def test_detector_finds_inline_secret_objects() -> None:
    doc = "apiVersion: v1\nkind: Secret\nmetadata: {name: x}\nstringData: {a: b}\n"
    assert secret_objects(doc) == ["x"]
