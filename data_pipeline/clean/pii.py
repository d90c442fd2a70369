"""PII redaction: e-mail addresses, IP addresses, phone numbers, and keys/secrets.

Matches are replaced by placeholders (StarCoder's convention: ``<EMAIL>``, ``<IP_ADDRESS>``,
``<PHONE>``, ``<KEY>``) so the model still sees that something stood there. Private,
loopback and documentation IP ranges are kept: they identify no one and are common in code
and docs. Secrets are redacted in every domain by default: web pages and papers paste keys
and tokens too. Each record counts its redactions.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from common.domains import DOMAINS

# Patterns start with a literal where possible (Python's re scans for a literal prefix fast):
# an e-mail is found from its "@domain" and its local part taken from the text before it.
EMAIL_DOMAIN = re.compile(r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
EMAIL_LOCAL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}$")
IPV4 = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}")
_IPV4_BEFORE = re.compile(r"[\w.]")
_IPV4_AFTER = re.compile(r"[\w.]*\d")
IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}(?![\w:])")
# "+<country> ..." with any separators, or North-American shapes with "-", "." or "(...)";
# digits separated by single spaces only ("315 316 317") are lists of numbers, not phones.
PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?|\d{1,4}[ .-])\d{3,4}[ .-]\d{3,4}"
    r"|(?:\(\d{3}\) ?|\d{3}[.-])\d{3}[.-]\d{4})(?![\w-])"
)
# (pattern, literal prefixes): a pattern only runs on text containing one of its prefixes, so
# the cost of a rule that cannot match is one substring search, not a regex scan.
SECRETS = (
    (
        re.compile(
            r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |PGP )?PRIVATE KEY(?: BLOCK)?-----[\s\S]+?-----END [A-Z ]*PRIVATE KEY(?: BLOCK)?-----"
        ),
        ("-----BEGIN",),
    ),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), ("AKIA", "ASIA")),  # AWS access key id
    (
        re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"),
    ),  # GitHub tokens
    (re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b"), ("xox",)),  # Slack tokens
    (re.compile(r"\bsk-[A-Za-z0-9_-]{20,}\b"), ("sk-",)),  # OpenAI-style secret keys
    (re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"), ("AIza",)),  # Google API key
    (re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\b"), ("eyJ",)),  # JWT
)
# key = "value" assignments whose name says secret; only the value is replaced.
ASSIGNED_SECRET = re.compile(
    r"""(?i)\b((?:api[_-]?key|secret(?:[_-]?key)?|access[_-]?token|auth[_-]?token|password|passwd|private[_-]?key)\w*\s*[:=]\s*['"])([^'"\s]{8,})(['"])"""
)
_ASSIGNED_SECRET_WORDS = ("key", "secret", "token", "passw", "passwd")
# Cheap necessary conditions for the address and phone patterns.
_DOTTED_DIGITS = re.compile(r"\d\.\d+\.\d+\.\d")
_PHONE_SHAPE = re.compile(r"\d{3}[ .-]\d{3,4}\b")


def _email_spans(text: str) -> list[tuple[int, int]]:
    spans = []
    for match in EMAIL_DOMAIN.finditer(text):
        local = EMAIL_LOCAL.search(text, max(0, match.start() - 64), match.start())
        if local:
            spans.append((local.start(), match.end()))
    return spans


def _public_ipv4(match: re.Match) -> bool:
    text, start, end = match.string, match.start(), match.end()
    if start and _IPV4_BEFORE.match(text, start - 1) or _IPV4_AFTER.match(text, end):
        return False  # part of a version string or a longer dotted number
    return _public_ip(match)


def _public_ip(match: re.Match) -> bool:
    try:
        address = ipaddress.ip_address(match.group(0))
    except ValueError:
        return False  # 999.1.2.3 or a version string is not an address
    return address.is_global


class Redactor:
    """Applies the configured redactions; ``redact`` returns (text, number of redactions)."""

    def __init__(
        self,
        email: bool = True,
        ip_address: bool = True,
        phone: bool = True,
        secrets: bool = True,
        secrets_domains: tuple = DOMAINS,
    ):
        self.email, self.ip_address, self.phone, self.secrets = email, ip_address, phone, secrets
        self.secrets_domains = frozenset(secrets_domains)

    def redact(self, text: str, domain: str = "code") -> tuple[str, int]:
        count = 0

        def sub(pattern: re.Pattern, placeholder: str, text: str, keep=None) -> str:
            nonlocal count

            def replace(match: re.Match) -> str:
                nonlocal count
                if keep is not None and not keep(match):
                    return match.group(0)
                count += 1
                return placeholder

            return pattern.sub(replace, text)

        if self.secrets and domain in self.secrets_domains:
            for pattern, prefixes in SECRETS:
                if any(p in text for p in prefixes):
                    text = sub(pattern, "<KEY>", text)
            lower = text.lower()
            if any(w in lower for w in _ASSIGNED_SECRET_WORDS):
                text, n = ASSIGNED_SECRET.subn(r"\1<KEY>\3", text)
                count += n
        if self.email and "@" in text:
            spans = _email_spans(text)
            for start, end in reversed(spans):
                text = text[:start] + "<EMAIL>" + text[end:]
            count += len(spans)
        if self.ip_address:
            if _DOTTED_DIGITS.search(text):
                text = sub(IPV4, "<IP_ADDRESS>", text, keep=_public_ipv4)
            if text.count(":") >= 7:
                text = sub(IPV6, "<IP_ADDRESS>", text, keep=_public_ip)
        if self.phone and _PHONE_SHAPE.search(text):
            text = sub(PHONE, "<PHONE>", text)
        return text, count

    def __call__(self, record: dict[str, Any]) -> dict[str, Any]:
        text, count = self.redact(record["text"], record["domain"])
        return {**record, "text": text, "redactions": record.get("redactions", 0) + count}
