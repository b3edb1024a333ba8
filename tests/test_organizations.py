"""Email-domain organizations (streams.organizations): askbot-reference.md §4 and our decisions."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from streams import organizations
from streams.organizations import (
    ORGANIZATION_GROUP_ID_BASE,
    WEBMAIL_BRAND_LABELS,
    WEBMAIL_DOMAINS,
    email_domain,
    is_webmail,
    organization_group_id,
    organization_name,
)

# -- §4's table and merging --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("domain", "name"),
    [
        ("Sub.Example.co.uk", "Example"),
        ("example.com", "Example"),
        ("EXAMPLE.COM", "Example"),
        ("foo.bar.baz.io", "Baz"),
        ("my-company.org", "My-Company"),
    ],
)
def test_askbot_table(domain: str, name: str) -> None:
    assert organization_name(f"alice@{domain}") == name


def test_empty_email_has_no_organization() -> None:
    """Askbot's `Unknown organization` group never has members; we make none (our decision)."""
    assert organization_name("") is None


def test_domains_sharing_a_registrable_label_merge() -> None:
    domains = ("example.com", "example.org", "sub.example.co.uk")
    assert {organization_name(f"bob@{domain}") for domain in domains} == {"Example"}


@pytest.mark.parametrize(
    ("domain", "name"),
    [
        ("ACME-widgets-EU.com", "Acme-Widgets-Eu"),
        ("a-b-c-d.co.uk", "A-B-C-D"),
        ("my--company.org", "My--Company"),  # the empty part between the hyphens is kept
        ("McDonalds.com", "Mcdonalds"),
        ("3com.com", "3com"),  # not str.title(): no capital after a digit
        ("x.com", "X"),
        ("mail.example.com", "Example"),  # a 'mail' subdomain is not the webmail mail.com
        ("foo.github.io", "Github"),  # PSL private suffixes are not suffixes, as in Askbot
        ("yahoo-inc.com", "Yahoo-Inc"),  # a brand label counts only as the whole label
        ("Example.COM.", "Example"),  # the root's trailing dot
        ("  example.com  ", "Example"),
    ],
)
def test_capitalisation_and_labels(domain: str, name: str) -> None:
    assert organization_name(f"carol@{domain}") == name


def test_only_the_domain_decides() -> None:
    assert organization_name("Some.Body+tag@example.com") == "Example"
    assert organization_name("@example.com") == "Example"


# -- no organization ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "email",
    [
        "no-at-sign",
        "example.com",
        "dave@",
        "dave@   ",
        "dave@.",
        "dave@localhost",
        "dave@127.0.0.1",
        "dave@[::1]",
        "dave@[127.0.0.1]",
        "dave@co.uk",
        "dave@com",
        "dave@corp.internal",  # unknown top-level domain: no registrable label
        "dave@a..example.com",
        "dave@.example.com",
        "dave@example.com..",
        "dave@-example.com",
        "dave@example-.com",
        "dave@b@example.com",  # the domain is after the first '@', as in Askbot
        "dave@example.com/other.org",
        "dave@example.com:25",
        "dave@exa mple.com",
        "dave@example.com\x00",
    ],
)
def test_no_organization(email: str) -> None:
    assert organization_name(email) is None


@pytest.mark.parametrize(
    "domain",
    [
        "gmail.com",
        "GMail.com",
        "googlemail.com",
        "yahoo.co.uk",
        "yahoo.com",
        "ymail.com",
        "hotmail.fr",
        "hotmail.com",
        "outlook.com",
        "outlook.de",
        "live.com",
        "icloud.com",
        "proton.me",
        "pm.me",
        "mail.ru",
        "yandex.kz",
        "gmx.at",
        "qq.com",
        "163.com",
        "mx.gmail.com",  # a provider's subdomain
        "eu.mail.yahoo.co.jp",
    ],
)
def test_webmail_is_no_organization(domain: str) -> None:
    assert is_webmail(domain)
    assert organization_name(f"erin@{domain}") is None


@pytest.mark.parametrize(
    "domain",
    [
        "example.com",
        "google.com",  # Google's staff are an organization; gmail.com users are not
        "microsoft.com",
        "apple.com",
        "examplemail.com",  # not a suffix match on 'mail.com'
        "notgmail.com",
        "gmail-team.com",
        "live-nation.com",
        "mail.example.com",
        "live.example.com",
        "localhost",
        "",
        "co.uk",
    ],
)
def test_not_webmail(domain: str) -> None:
    assert not is_webmail(domain)


def test_every_webmail_domain_is_registrable() -> None:
    """An entry that is itself a public suffix, or has a subdomain, could never match."""
    for domain in WEBMAIL_DOMAINS:
        assert email_domain(f"x@{domain}") == domain
        parts = organizations._registrable_parts(domain)
        assert parts is not None, domain
        assert ".".join(parts) == domain
        assert is_webmail(domain), domain


def test_webmail_lists_do_not_overlap() -> None:
    """A domain whose label is a brand is already webmail: listing it too would be noise."""
    assert not [d for d in WEBMAIL_DOMAINS if d.split(".")[0] in WEBMAIL_BRAND_LABELS]
    assert all(label == label.lower() and "." not in label for label in WEBMAIL_BRAND_LABELS)


# -- domains -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("email", "domain"),
    [
        ("a@Sub.Example.co.uk", "sub.example.co.uk"),
        ("a@ EXAMPLE.COM. ", "example.com"),
        ("a@例え。テスト", "例え.テスト"),  # ideographic full stop
        ("a@bücher.de", "bücher.de"),
        ("no-at-sign", None),
        ("a@", None),
        ("a@b@c.com", None),
    ],
)
def test_email_domain(email: str, domain: str | None) -> None:
    assert email_domain(email) == domain


@pytest.mark.parametrize(
    ("email", "name"),
    [
        ("a@bücher.de", "Bücher"),
        ("a@BÜCHER.de", "Bücher"),
        ("a@xn--bcher-kva.de", "Xn--Bcher-Kva"),  # punycode is not decoded, as in Askbot
        ("a@пример.рф", "Пример"),
        ("a@x.xn--p1ai", "X"),  # .рф spelled in punycode is still a known suffix
        ("a@例え。テスト", None),
    ],
)
def test_idn_domains(email: str, name: str | None) -> None:
    assert organization_name(email) == name


@pytest.mark.parametrize(
    "email", ["a@xn--.com", "a@xn--zz.xn--zz", "a@a.xn--", "a@xn--a.xn--p1ai", "a@ǆ.com"]
)
def test_odd_idn_domains_do_not_crash(email: str) -> None:
    name = organization_name(email)
    assert name is None or isinstance(name, str)


# -- the PSL snapshot ------------------------------------------------------------------------


@pytest.fixture
def network_attempts(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Records (and refuses) every DNS lookup and socket connect while a fresh extractor runs.

    Refusing alone would prove nothing: tldextract swallows fetch errors and falls back to its
    snapshot, so the test looks at what was attempted.
    """
    attempts: list[str] = []

    def refuse(what: str) -> object:
        def refused(*args: object, **kwargs: object) -> object:
            attempts.append(what)
            raise OSError(f"network is off in this test: {what}")

        return refused

    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("connect_ex"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    organizations._extractor.cache_clear()
    yield attempts
    organizations._extractor.cache_clear()


def test_psl_is_the_bundled_snapshot_without_network(network_attempts: list[str]) -> None:
    assert organization_name("alice@sub.example.co.uk") == "Example"
    assert organization_name("alice@foo.bar.baz.io") == "Baz"
    assert network_attempts == []


def test_network_guard_sees_a_fetch(network_attempts: list[str]) -> None:
    """The guard itself works: a default-configured tldextract tries to download the PSL."""
    from tldextract import TLDExtract

    assert TLDExtract(cache_dir=None)("a.example.co.uk").domain == "example"
    assert network_attempts


def test_extractor_is_built_once() -> None:
    assert organizations._extractor() is organizations._extractor()


# -- group ids ---------------------------------------------------------------------------------


def test_group_id_known_value() -> None:
    """Pinned: every process, and every version of this code, must give an organization one id."""
    assert organization_group_id("Example") == 5825503839656004735
    digest = hashlib.sha256(b"example").hexdigest()
    assert organization_group_id("Example") == 2**62 + int(digest[:16], 16) % 2**62


def test_group_id_is_case_insensitive_and_distinct() -> None:
    assert organization_group_id("My-Company") == organization_group_id("my-company")
    assert organization_group_id("Example") != organization_group_id("Example2")


@pytest.mark.parametrize("name", ["", "   "])
def test_group_id_needs_a_name(name: str) -> None:
    with pytest.raises(ValueError, match="non-blank"):
        organization_group_id(name)


# -- properties --------------------------------------------------------------------------------

ASCII_LABEL = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,20}[A-Za-z0-9])?", fullmatch=True)
SUFFIXES = ["com", "org", "io", "de", "co.uk", "com.au", "co.jp", "ac.uk", "xn--p1ai"]


@st.composite
def ascii_emails(draw: st.DrawFn) -> tuple[str, str, str]:
    """(email, registrable label, suffix): a known suffix, random subdomains and random case."""
    local = draw(st.from_regex(r"[A-Za-z0-9._+-]{1,10}", fullmatch=True))
    subdomains = draw(st.lists(ASCII_LABEL, max_size=3))
    label = draw(ASCII_LABEL)
    suffix = draw(st.sampled_from(SUFFIXES + [s.upper() for s in SUFFIXES]))
    return f"{local}@{'.'.join([*subdomains, label, suffix])}", label, suffix


def is_capitalised(name: str) -> bool:
    return all(part == part[:1].upper() + part[1:].lower() for part in name.split("-"))


@given(ascii_emails())
def test_name_is_the_capitalised_registrable_label(case: tuple[str, str, str]) -> None:
    email, label, suffix = case
    # `label.suffix` may itself be a public suffix (`ltd.co.uk`): then the label is not registrable
    assume(organizations._extractor()(f"{label}.{suffix}").suffix == suffix)
    name = organization_name(email)
    if is_webmail(email.partition("@")[2]):
        assert name is None
    else:
        assert name is not None
        assert name.lower() == label.lower()
        assert is_capitalised(name)


@given(st.text(alphabet=st.characters(codec="ascii")))
def test_any_ascii_text_gives_none_or_a_capitalised_name(email: str) -> None:
    name = organization_name(email)
    assert name is None or (name != "" and is_capitalised(name))


@given(st.text())
def test_any_text_gives_none_or_a_name(email: str) -> None:
    """Unicode too: no exception from the PSL lookup (punycode, odd dots, unassigned code points).

    Not `is_capitalised`: Unicode upper-casing is not reversible ('ß' -> 'SS').
    """
    name = organization_name(email)
    assert name is None or (name != "" and "." not in name and "@" not in name)


@given(st.one_of(ascii_emails().map(lambda case: case[0]), st.text(alphabet="aB@.-xY1 ")))
def test_name_does_not_depend_on_case(email: str) -> None:
    name = organization_name(email)
    assert organization_name(email.upper()) == name
    assert organization_name(email.lower()) == name
    assert organization_name(email.swapcase()) == name


@given(st.text(min_size=1).filter(str.strip))
def test_group_id_is_deterministic_and_in_range(name: str) -> None:
    group_id = organization_group_id(name)
    assert group_id == organization_group_id(name)
    assert ORGANIZATION_GROUP_ID_BASE <= group_id <= 2**63 - 1


@given(st.from_regex(r"[A-Za-z0-9-]{1,30}", fullmatch=True))
def test_group_id_is_case_insensitive(name: str) -> None:
    group_id = organization_group_id(name)
    assert organization_group_id(name.upper()) == group_id
    assert organization_group_id(name.lower()) == group_id
    assert organization_group_id(name.swapcase()) == group_id
