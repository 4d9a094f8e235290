"""No secret in any file of the repository: every file git tracks, and every untracked file
that is not ignored (what the next commit would add), is searched for secret-looking literals.

tests/test_k8s/test_k8s_secrets.py checks the Kubernetes files (and rendered chart) for inline
Secret objects; this test covers the whole tree, with a detector that understands Python: an
assignment from an expression (``password=settings.pg_password``) is not a literal, a quoted
string is. Credentials the tests need are generated at run time (``secrets``).

A line may opt out with ``pragma: allowlist secret`` (for a deliberate, harmless literal);
there is none today.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Final

import pytest

REPO: Final = Path(__file__).resolve().parents[2]
MAX_BYTES: Final = 2_000_000
PRAGMA: Final = "pragma: allowlist secret"
# Shorter literals are separators or flags (`password = ":" + ...`), not credentials.
MIN_SECRET_LENGTH: Final = 4
# Files whose secret-looking lines are detector patterns and examples built from pieces.
ALLOWED_FILES: Final = {
    "tests/test_k8s/test_k8s_secrets.py": "the Kubernetes secret detector's own patterns",
}

# Tokens with a recognisable shape, wherever they appear.
TOKEN_RULES: Final = [
    ("private key block", re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")),
    ("AWS access key id", re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b")),
    ("GitHub token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{50,})")),
    ("GitLab token", re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}")),
    ("Slack token", re.compile(r"\bxox[abposr]-[0-9A-Za-z-]{10,}")),
    ("Google API key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b")),
    ("Stripe key", re.compile(r"\b[rs]k_live_[0-9A-Za-z]{20,}")),
    (
        "JSON web token",
        re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    ),
]
# scheme://user:password@host with a password that is not a placeholder.
URL_CREDENTIALS: Final = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s:/@'\"<>]+:([^\s@'\"/<>]+)@", re.I)
# A key naming a credential (the word must end the key: `pg_password`, `client_secret`,
# `api_token`, not `password_env` or `secret_file`), then `=`, `:` or `:=`, then the value.
SECRET_KEY: Final = (
    r"[A-Za-z0-9_.-]*?(?:passw(?:or)?d|pwd|pass|secret|token|api[_-]?key|access[_-]?key"
    r"|secret[_-]?key|private[_-]?key|client[_-]?secret|credentials?)"
)
ASSIGNMENT: Final = re.compile(
    rf"(?i)(?<![A-Za-z0-9_.-])(?P<key>{SECRET_KEY})(?![A-Za-z0-9_])[\"']?\s*(?::=|=|:)\s*"
    r"(?P<value>.*)$"
)
# Values that are not secrets: empty, references to variables, templates, placeholders.
PLACEHOLDER: Final = re.compile(
    r"""(?ix)^(?:
        | \*+ | x{3,} | \.{3} | - | ~ | null | none | nil | true | false | \d+
        | <[^<>]*>                      # <password>
        | \$\{[^}]*\} | \$\([^)]*\) | \$\w+ | %\(\w+\)s | %s   # ${X} $(cmd) $X %(x)s
        | \{\{.*\}\} | \{[^{}]*\}       # {{ .Values.x }}  {password}
        | redacted | placeholder | example | your[_-]\w+ | secret[_-]?ref\w*
        | passw(?:or)?d | pass | pwd | pw | secret       # user:password@host in docs
    )$"""
)
# Keys whose values are names or settings, not credentials (`existingSecret: finpipe-pg`).
NOT_A_CREDENTIAL_KEY: Final = re.compile(
    r"(?i)(?:existing|use|require|enable|disable|generate\w*)[_-]?(?:secret|password|token)$"
    r"|^(?:token|secret)[_-]?(?:type|name|ref|kind)$"
)


def _literal_value(value: str, python: bool) -> str | None:
    """The literal text assigned, or None when the value is an expression, a reference, a
    structure or prose rather than one literal."""
    value = value.strip()
    match = re.match(r"""^([rbuf]{0,2})(["'])(.*?)\2(.*)$""", value, re.I)
    if match:
        prefix, _, text, rest = match.groups()
        if python and re.match(r"\s*[-+%*.\[]", rest):
            return None  # part of an expression: ":" + quote(...), "{}".format(...)
        if "f" in prefix.lower():
            # An f-string is built from expressions; only its constant text could leak.
            text = re.sub(r"\{[^{}]*\}", "", text)
        return text or None
    if python:
        return None  # an unquoted value in Python is an expression (a name, a call, ...)
    value = re.split(r"\s+#", value, maxsplit=1)[0].strip().rstrip(",;")
    if not value or value[0] in "{[$<(" or re.search(r"\s", value):
        return None  # a mapping/list, a variable or command, a placeholder, or prose
    return value


def findings(text: str, path: str = "file.txt") -> list[str]:
    """Secret-looking literals in ``text`` (a file called ``path``), as 'line N: what'."""
    python = path.endswith((".py", ".pyi"))
    out: list[str] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if PRAGMA in line:
            continue
        for name, rule in TOKEN_RULES:
            if rule.search(line):
                out.append(f"line {lineno}: {name}")
        for match in URL_CREDENTIALS.finditer(line):
            password = match.group(1)
            if not PLACEHOLDER.match(password) and not password.startswith(("{", "$", "<")):
                out.append(f"line {lineno}: credentials in a URL")
        for match in ASSIGNMENT.finditer(line):
            key = match.group("key")
            if NOT_A_CREDENTIAL_KEY.search(key):
                continue
            value = _literal_value(match.group("value"), python)
            if value is None or len(value) < MIN_SECRET_LENGTH or PLACEHOLDER.match(value):
                continue
            if python and re.fullmatch(r"[A-Z][A-Z0-9_]*", value):
                continue  # an env var or header *name* ("FINPIPE_PG_PASSWORD")
            out.append(f"line {lineno}: literal value for {key}")
    return out


def repository_files() -> list[Path]:
    """Tracked files, plus untracked ones that are not ignored (they are about to be added)."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        .stdout.decode()
        .split("\0")
    )
    return sorted({REPO / name for name in listed if name and (REPO / name).is_file()})


def _text(path: Path) -> str | None:
    data = path.read_bytes()[:MAX_BYTES]
    if b"\0" in data[:8192]:
        return None  # binary
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def test_no_secret_in_any_repository_file() -> None:
    files = repository_files()
    assert REPO / "README.md" in files and REPO / "pyproject.toml" in files
    problems = {}
    for path in files:
        if str(path.relative_to(REPO)) in ALLOWED_FILES:
            continue
        text = _text(path)
        if text is not None and (found := findings(text, path.name)):
            problems[str(path.relative_to(REPO))] = found
    assert not problems, f"secret-looking literals (use env vars / Secrets): {problems}"


def test_state_and_credentials_are_ignored_by_git() -> None:
    """Where the local stack writes generated credentials (the SASL node's admin password,
    its TLS keystore) is ignored, so they cannot be committed by accident."""
    probe = [".state/kafka/sasl/admin.secret", ".state/kafka/sasl/tls/broker.p12"]
    result = subprocess.run(
        ["git", "check-ignore", *probe], cwd=REPO, capture_output=True, text=True
    )
    assert result.stdout.split() == probe


# --- the detector itself ---------------------------------------------------------------------
# Built from pieces so that this file holds no literal the scan above would report.
_PW = "pass" + "word"
_HUNTER = "hunter" + "2hunter2"
_AWS = "aws_secret_" + "access_key"
CAUGHT = [
    ("config.yaml", f"{_PW}: {_HUNTER}"),
    ("config.yaml", f"{_PW}: {_HUNTER}  # the production one"),
    ("config.yaml", f"  postgresql{_PW.capitalize()}: s3cr3tvalue"),
    ("deploy.sh", f"kubectl create secret generic x --from-literal={_PW}={_HUNTER}"),
    (".env", f"FINPIPE_PG_{_PW.upper()}={_HUNTER}"),
    ("settings.py", f'pg_{_PW} = "{_HUNTER}"'),
    ("settings.py", f'connect(host="db", {_PW}="{_HUNTER}")'),
    ("settings.py", f'config = {{"sasl.{_PW}": "{_HUNTER}"}}'),
    ("settings.py", f"API_TOKEN = '{_HUNTER}'"),
    ("app.json", f'"client_secret": "{_HUNTER}"'),
    ("settings.toml", f'{_AWS} = "AbCdEfGh{_HUNTER}"'),
    ("notes.md", "postgresql://finpipe:" + _HUNTER + "@db:5432/finpipe"),
    ("notes.md", "amqp://user:" + _HUNTER + "@broker/"),
    ("key.pem", "-----BEGIN RSA " + "PRIVATE KEY-----"),
    ("key.pem", "-----BEGIN OPENSSH " + "PRIVATE KEY-----"),
    ("aws.txt", "AKIA" + "ABCDEFGHIJKLMNOP"),
    ("ci.yml", "token: gh" + "p_" + "a" * 36),
    ("notes.md", "eyJ" + "hbGciOiJIUzI1NiJ9" + ".eyJ" + "zdWIiOiIxMjM0In0" + ".abcdefghijk"),
    ("server.properties", "ssl.keystore." + _PW + "=" + _HUNTER),
    (
        "server.properties",
        'sasl.jaas.config=ScramLoginModule required username="a" ' + _PW + '="' + _HUNTER + '";',
    ),
]
CLEAN = [
    ("deploy.sh", f'--from-literal={_PW}="$FINPIPE_PG_{_PW.upper()}"'),
    ("values.yaml", f"{_PW}Secret:"),
    ("values.yaml", f"  key: {_PW}"),
    ("values.yaml", f"{_PW}: ~"),
    ("values.yaml", f'{_PW}: ""'),
    ("values.yaml", "existingSecret: finpipe-pg-app"),
    ("values.yaml", f"{_PW}: {{{{ .Values.pg.{_PW} }}}}"),
    ("values.yaml", "secretKeyRef: {name: finpipe-pg-app, key: " + _PW + "}"),
    (".env", f"FINPIPE_PG_{_PW.upper()}=$(cat /run/secrets/pg)"),
    (".env", f"FINPIPE_PG_{_PW.upper()}=<from your secret store>"),
    ("settings.py", f"kafka_sasl_{_PW}: SecretStr | None = None"),
    ("settings.py", f'kwargs["{_PW}"] = self.pg_{_PW}.get_secret_value()'),
    ("settings.py", f"{_PW}=settings.pg_{_PW}, user=user"),
    ("settings.py", f'"sasl.{_PW}": self.users[kind] if {_PW} is None else {_PW},'),
    ("settings.py", f'{_PW.upper()}_ENV = "FINPIPE_KAFKA_SASL_ADMIN_{_PW.upper()}"'),
    ("settings.py", '_ADMIN_SECRET_FILE = "admin.secret"'),
    ("settings.py", f'{_PW} = ":" + quote(settings.pg_{_PW}.get_secret_value(), safe="")'),
    ("settings.py", f'url = f"postgresql://{{user}}:{{{_PW}}}@{{host}}/db"'),
    ("settings.py", "token = secrets.token_urlsafe(24)"),
    ("notes.md", "postgresql://finpipe@db:5432/finpipe"),
    ("notes.md", "postgresql://finpipe:${PGPASSWORD}@db/finpipe"),
    ("notes.md", "postgresql://app:<" + _PW + ">@db/finpipe"),
    ("notes.md", f"| `FINPIPE_PG_{_PW.upper()}` | unset | the {_PW} |"),
    ("server.properties", "ssl.keystore.location=/etc/kafka/broker.p12"),
    ("notes.md", f"{_PW}: {_HUNTER}  # {PRAGMA}"),
    ("values.yaml", f'{_PW}Secret: {{name: "", key: {_PW}}}'),
    ("dagster.yaml", f"#   {_PW}: {{env: FINPIPE_PG_{_PW.upper()}}}"),
    ("notes.md", "The listener needs no credentials: a NetworkPolicy admits only the agents"),
]


@pytest.mark.parametrize(("path", "line"), CAUGHT, ids=[f"{p}:{line[:30]}" for p, line in CAUGHT])
def test_detector_catches(path: str, line: str) -> None:
    assert findings(line, path), line


@pytest.mark.parametrize(("path", "line"), CLEAN, ids=[f"{p}:{line[:30]}" for p, line in CLEAN])
def test_detector_allows_references_and_placeholders(path: str, line: str) -> None:
    assert not findings(line, path), findings(line, path)
