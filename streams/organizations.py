"""Email-domain organizations: which organization (analytics group) a user's email puts them in.

askbot-reference.md §4. Askbot's rule, kept here: the organization is named after the registrable
label of the email's domain, i.e. the label just left of the Public Suffix List (PSL) suffix
(`Sub.Example.co.uk` -> `example`), split on '-', each part capitalised (first letter upper, the
rest lower) and joined again with '-' (`my-company.org` -> `My-Company`). Domains that share the
label share the organization (`example.com`, `example.org` and `sub.example.co.uk` all give
`Example`), exactly as Askbot merges them.

The PSL is the snapshot bundled with `tldextract` 5.1.2 (Askbot's version), loaded once per
process. The network is never used: by default tldextract downloads the live list and caches it
under ~/.cache, which would make names depend on when and where a worker started, and would stall
a worker with no internet access. Private PSL entries (`github.io`, `blogspot.com`) are not
suffixes, as in Askbot (`alice@foo.github.io` -> `Github`).

Our deliberate differences from Askbot, where `organization_name` returns None (no organization):

* an empty email: Askbot creates an `Unknown organization` group that stays empty (§4), so no
  user is ever in it; we create nothing;
* an email without '@': Askbot takes the whole address as the "domain", which matches nobody;
* an empty or invalid domain (after lower-casing, stripping and removing one trailing root dot):
  an empty label (`a..com`, `.com`, `com..`), a label that starts or ends with '-', an ASCII
  character other than a-z, 0-9, '-' and '_' (so a second '@', '/', ':', '[' of an IP literal),
  or a non-printable character. Non-ASCII letters are allowed (IDN domains in Unicode form);
* a domain with no registrable label: `localhost`, an IP address, an unknown top-level domain
  (`corp.internal`) or a bare public suffix (`co.uk`);
* public webmail domains (`is_webmail`): Askbot makes `gmail.com` a group `Gmail`, but people who
  share a webmail provider are not an organization, and such groups would be the largest ones and
  swamp the per-organization figures.

Punycode is not decoded, as in Askbot: `xn--bcher-kva.de` gives `Xn--Bcher-Kva` while the Unicode
spelling `bücher.de` gives `Bücher`.

`organization_group_id` gives a group id to an organization that has no forum group yet, so that
two processes that meet the same new organization agree on its id without coordinating.
"""

from __future__ import annotations

import hashlib
import string
from functools import cache
from typing import Final

from tldextract import TLDExtract

__all__ = [
    "ORGANIZATION_GROUP_ID_BASE",
    "WEBMAIL_BRAND_LABELS",
    "WEBMAIL_DOMAINS",
    "email_domain",
    "is_webmail",
    "organization_group_id",
    "organization_name",
]

ORGANIZATION_GROUP_ID_BASE: Final = 2**62
"""Organization group ids are BASE + (62-bit hash), i.e. in [2**62, 2**63 - 1]: inside the
contract's id range 1..2**63-1 and far above forum group ids, which are small sequence numbers."""

WEBMAIL_DOMAINS: Final[frozenset[str]] = frozenset(
    {
        # Apple, AOL, Yahoo's other brands
        "icloud.com",
        "me.com",
        "mac.com",
        "aol.com",
        "aim.com",
        "rocketmail.com",
        # Microsoft (hotmail.* and outlook.* are brand labels)
        "msn.com",
        "live.com",
        "live.co.uk",
        "live.fr",
        "live.de",
        "live.it",
        "live.nl",
        "live.ca",
        "live.com.au",
        "windowslive.com",
        # Privacy-oriented and independent providers
        "proton.me",
        "protonmail.com",
        "protonmail.ch",
        "pm.me",
        "tutanota.com",
        "tutanota.de",
        "tuta.io",
        "tuta.com",
        "zoho.com",
        "fastmail.com",
        "fastmail.fm",
        "hey.com",
        "mail.com",
        "hushmail.com",
        "posteo.de",
        "mailbox.org",
        # Russia (yandex.* is a brand label)
        "mail.ru",
        "inbox.ru",
        "list.ru",
        "bk.ru",
        "rambler.ru",
        "ya.ru",
        # Germany (gmx.* is a brand label)
        "web.de",
        "t-online.de",
        "freenet.de",
        # China, Korea, India
        "qq.com",
        "foxmail.com",
        "163.com",
        "126.com",
        "yeah.net",
        "sina.com",
        "naver.com",
        "daum.net",
        "hanmail.net",
        "rediffmail.com",
        # Czechia, Poland, Italy, France
        "seznam.cz",
        "wp.pl",
        "o2.pl",
        "interia.pl",
        "libero.it",
        "laposte.net",
        "orange.fr",
        "wanadoo.fr",
        "free.fr",
        "sfr.fr",
        # UK and US internet providers
        "btinternet.com",
        "comcast.net",
        "verizon.net",
        "att.net",
        "sbcglobal.net",
    }
)
"""Webmail registrable domains, matched exactly (so any subdomain, but not `mail.example.com`).
A domain is listed here only when its label is too generic to match under every suffix
(`mail.ru` but not `mail.*`, `live.com` but not `live.*`)."""

WEBMAIL_BRAND_LABELS: Final[frozenset[str]] = frozenset(
    {"gmail", "googlemail", "yahoo", "ymail", "hotmail", "outlook", "yandex", "gmx"}
)
"""Registrable labels that are webmail under any suffix: the providers have dozens of country
domains (`yahoo.co.uk`, `hotmail.fr`, `gmx.at`, `yandex.kz`). The label must match whole, so
`yahoo-inc.com` or `gmailer.com` are organizations. The price is that an unrelated company whose
registrable label is one of these words is taken for webmail."""

_ASCII_HOST_CHARS: Final = frozenset(string.ascii_lowercase + string.digits + "-_")
_IDEOGRAPHIC_DOTS: Final = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
"""Full stops that IDNA (and tldextract) treat as label separators."""


def organization_name(email: str) -> str | None:
    """The organization of a user with this email, or None: see the module docstring."""
    domain = email_domain(email)
    if domain is None:
        return None
    parts = _registrable_parts(domain)
    if parts is None or _is_webmail_parts(*parts):
        return None
    return _capitalise_label(parts[0])


def email_domain(email: str) -> str | None:
    """The normalised domain of an email (after its first '@'), or None if absent or invalid.

    The first '@', as Askbot does; an address with a second '@' then has an invalid domain.
    """
    _, at, domain = email.partition("@")
    if not at:
        return None
    return _normalise_domain(domain)


def is_webmail(domain: str) -> bool:
    """Whether a domain belongs to a public webmail provider (WEBMAIL_DOMAINS, _BRAND_LABELS).

    Matched on the registrable domain, so a provider's subdomains count (`mx.gmail.com`) and
    look-alikes do not (`examplemail.com`). A domain that is invalid or has no registrable label
    is not webmail.
    """
    normalised = _normalise_domain(domain)
    if normalised is None:
        return False
    parts = _registrable_parts(normalised)
    return parts is not None and _is_webmail_parts(*parts)


def organization_group_id(name: str) -> int:
    """A deterministic group id for a new organization group, in [2**62, 2**63 - 1].

    From the lower-cased name, because Askbot looks groups up by case-insensitive name: `Example`
    and `EXAMPLE` are one group and must get one id. A hash rather than a counter, so that
    processes creating the same organization agree without talking to each other.
    """
    if not name.strip():
        raise ValueError("an organization group needs a non-blank name")
    digest = hashlib.sha256(name.lower().encode("utf-8")).digest()
    return ORGANIZATION_GROUP_ID_BASE + int.from_bytes(digest[:8], "big") % 2**62


def _normalise_domain(domain: str) -> str | None:
    """Lower-cased, stripped, without the root's trailing dot; None if not a plausible host."""
    normalised = domain.strip().lower().translate(_IDEOGRAPHIC_DOTS).removesuffix(".")
    labels = normalised.split(".")
    if not all(_is_valid_label(label) for label in labels):
        return None
    return normalised


def _is_valid_label(label: str) -> bool:
    """A non-empty DNS label without edge hyphens, of host characters (Unicode letters allowed).

    Rejecting URL punctuation matters beyond tidiness: tldextract parses its input as a URL, so
    `a@b/c.com` or `x:1` would otherwise be cut at the '/' or ':' and named after something else.
    """
    if not label or label[0] == "-" or label[-1] == "-":
        return False
    return all(_is_host_char(char) for char in label)


def _is_host_char(char: str) -> bool:
    """ASCII: letters, digits, '-', '_'. Other characters: any printable one (IDN labels)."""
    if char.isascii():
        return char in _ASCII_HOST_CHARS
    return char.isprintable()


def _registrable_parts(domain: str) -> tuple[str, str] | None:
    """(registrable label, public suffix) of a normalised domain; None if it has no such label.

    tldextract puts an IP address or a name under an unknown top-level domain in `domain` with an
    empty suffix, and a bare public suffix in `suffix` with an empty domain: neither has a
    registrable label.
    """
    extracted = _extractor()(domain)
    if not extracted.domain or not extracted.suffix:
        return None
    return extracted.domain, extracted.suffix


def _is_webmail_parts(label: str, suffix: str) -> bool:
    return label in WEBMAIL_BRAND_LABELS or f"{label}.{suffix}" in WEBMAIL_DOMAINS


def _capitalise_label(label: str) -> str:
    """Askbot's group name: each '-' part with its first letter upper and the rest lower.

    Not `str.capitalize`, which title-cases the first character (different for digraphs like
    'ǆ') and not `str.title`, which also capitalises after digits (`3com` -> `3Com`).
    """
    return "-".join(part[:1].upper() + part[1:].lower() for part in label.split("-"))


@cache
def _extractor() -> TLDExtract:
    """The process's one PSL extractor, built on first use from the bundled snapshot only.

    tldextract 5.1.2: `suffix_list_urls=()` leaves no URL to fetch, so it falls back to the
    snapshot in the package (`fallback_to_snapshot`); `cache_dir=None` disables its disk cache,
    so a list another program downloaded into ~/.cache is not read either. Parsing the list
    takes tens of milliseconds, so it is done once, here, not on each user's first lookup.
    """
    extractor = TLDExtract(
        cache_dir=None,
        suffix_list_urls=(),
        fallback_to_snapshot=True,
        include_psl_private_domains=False,
    )
    extractor("example.com")  # loads the snapshot now rather than in the first caller
    return extractor
