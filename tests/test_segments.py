"""Segments: Askbot's default-segment rule, strict validation naming the variable, membership."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from forum_analytics import segments as seg
from forum_analytics.segments import (
    DefaultSegmentConfig,
    NamedSegmentConfig,
    Segment,
    Segments,
    get_segments,
    resolve_segments,
)
from forum_analytics.settings import SettingsError, get_settings, load_settings

NAMED = "ANALYTICS_NAMED_SEGMENTS"
DEFAULT = "ANALYTICS_DEFAULT_SEGMENT"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No ANALYTICS_* variable and no .env from the developer's shell leaks into these tests."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("ANALYTICS_"):
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    get_segments.cache_clear()
    yield
    get_settings.cache_clear()
    get_segments.cache_clear()


def staff(**changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": "Staff", "slug": "staff", "group_ids": [1, 2]}
    entry.update(changes)
    return entry


def resolve(named: Any = (), default: Any = None) -> Segments:
    return resolve_segments(load_settings(named_segments=named, default_segment=default))


def error_of(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    return str(info.value)


def line_with(message: str, why: str) -> str:
    """The one line of a SettingsError message that says `why`."""
    lines = [line.strip() for line in message.splitlines() if why in line]
    assert len(lines) == 1, message
    return lines[0]


# --- the default segment: Askbot's rule ------------------------------------------------------


def test_nothing_configured_means_all_users() -> None:
    s = resolve_segments(load_settings())
    assert s.named == ()
    assert s.default == Segment("all", "All Users", "", frozenset(), is_default=True)
    assert s.all_slugs() == ("all",)


def test_named_segments_without_default_config_mean_rest_of_users() -> None:
    s = resolve([staff()])
    assert (s.default.slug, s.default.name, s.default.description) == ("rest", "Rest of Users", "")
    assert s.default.is_default
    assert s.all_slugs() == ("staff", "rest")


def test_an_empty_default_object_counts_as_absent() -> None:
    assert resolve([staff()], {}).default.slug == "rest"
    assert resolve([], {}).default.slug == "all"


def test_json_null_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NAMED, "null")
    monkeypatch.setenv(DEFAULT, "null")
    settings = load_settings()
    assert (settings.named_segments, settings.default_segment) == ((), None)


def test_explicit_default_with_only_a_slug_takes_the_all_users_name() -> None:
    s = resolve([staff()], {"slug": "others"})
    assert (s.default.slug, s.default.name, s.default.description) == ("others", "All Users", "")


def test_explicit_default_with_only_a_description_is_completed_from_all() -> None:
    # Askbot's rule read literally: the config is not empty, so `all`/"All Users" fill it in.
    s = resolve([staff()], {"description": "everyone else"})
    assert (s.default.slug, s.default.name) == ("all", "All Users")
    assert s.default.description == "everyone else"


def test_explicit_full_default() -> None:
    config = {"name": "Members", "slug": "members", "description": "Everyone else"}
    s = resolve([staff()], config)
    assert s.default == Segment("members", "Members", "Everyone else", frozenset(), True)


def test_named_segments_keep_order_and_fields_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    named = [
        staff(description="Moderators and admins"),
        {"name": "Students", "slug": "students", "group_ids": [7]},
    ]
    monkeypatch.setenv(NAMED, json.dumps(named))
    monkeypatch.setenv(DEFAULT, '{"name": "Others"}')
    s = resolve_segments(load_settings())
    assert s.named == (
        Segment("staff", "Staff", "Moderators and admins", frozenset({1, 2}), False),
        Segment("students", "Students", "", frozenset({7}), False),
    )
    assert (s.default.slug, s.default.name) == ("all", "Others")
    assert s.all_slugs() == ("staff", "students", "all")


def test_keyword_overrides_accept_validated_configs() -> None:
    config = NamedSegmentConfig(name="Staff", slug="staff", group_ids=(3,))
    settings = load_settings(
        named_segments=(config,), default_segment=DefaultSegmentConfig(slug="rest-of-us")
    )
    assert settings.named_segments == (config,)
    assert resolve_segments(settings).default.slug == "rest-of-us"


def test_get_segments_is_resolved_once_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NAMED, json.dumps([staff()]))
    first = get_segments()
    assert first.all_slugs() == ("staff", "rest")
    monkeypatch.setenv(NAMED, "[]")
    assert get_segments() is first  # cached: one definition for the whole process
    get_settings.cache_clear()
    get_segments.cache_clear()
    assert get_segments().all_slugs() == ("all",)


# --- validation: every rule, through load_settings, naming the variable ----------------------

SLUG_RULE = "slug must be 1..50 characters of a-z, 0-9 and '-'"
GROUPS_RULE = "group_ids must be a non-empty list of integers in 1..2**63-1"


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        (staff(name=""), "entry 1 (slug 'staff'): name must be a non-empty string"),
        (staff(name="   "), "name must be a non-empty string"),
        (staff(name=5), "name must be a non-empty string (got 5)"),
        ({"slug": "staff", "group_ids": [1]}, "entry 1 (slug 'staff'): missing key 'name'"),
        ({"name": "Staff", "group_ids": [1]}, "entry 1 (name 'Staff'): missing key 'slug'"),
        ({"name": "Staff", "slug": "staff"}, "entry 1 (slug 'staff'): missing key 'group_ids'"),
        (staff(slug="Staff"), f'{SLUG_RULE}, starting with a letter or digit (got "Staff")'),
        (staff(slug="st_aff"), SLUG_RULE),
        (staff(slug="-staff"), SLUG_RULE),
        (staff(slug=""), SLUG_RULE),
        (staff(slug="a" * 51), SLUG_RULE),
        (staff(slug="group:3"), SLUG_RULE),
        (staff(slug="staff "), SLUG_RULE),
        (staff(slug=7), SLUG_RULE),
        (staff(slug="all-users"), "slug 'all-users' is reserved by the report URLs"),
        (staff(description=None), "entry 1 (slug 'staff'): description must be a string"),
        (staff(group_ids=[]), f"entry 1 (slug 'staff'): {GROUPS_RULE} (got [])"),
        (staff(group_ids=[0]), GROUPS_RULE),
        (staff(group_ids=[-4]), GROUPS_RULE),
        (staff(group_ids=[2**63]), GROUPS_RULE),
        (staff(group_ids=[True]), GROUPS_RULE),
        (staff(group_ids=["3"]), GROUPS_RULE),
        (staff(group_ids=[3.0]), GROUPS_RULE),
        (staff(group_ids=3), GROUPS_RULE),
        (staff(group_ids=[3, 4, 3]), "entry 1 (slug 'staff'): group_ids lists group 3 more"),
        (
            {"name": "Staff", "slug": "staff", "groups": [1]},
            "unknown key 'groups' (did you mean 'group_ids'?); "
            "allowed keys: name, slug, description, group_ids",
        ),
        (staff(colour="red"), "entry 1 (slug 'staff'): unknown key 'colour'"),
        (["staff"], "entry 1: must be an object with name, slug, group_ids"),
    ],
)
def test_bad_named_segment_is_reported(
    monkeypatch: pytest.MonkeyPatch, entry: Any, why: str
) -> None:
    message = error_of(monkeypatch, **{NAMED: json.dumps([entry])})
    assert line_with(message, why).startswith(f"{NAMED}: entry 1"), message


def test_the_briefs_example_message(monkeypatch: pytest.MonkeyPatch) -> None:
    entries = [staff(slug="admins"), staff(group_ids=[])]
    message = error_of(monkeypatch, **{NAMED: json.dumps(entries)})
    assert (
        f"{NAMED}: entry 2 (slug 'staff'): group_ids must be a non-empty list of integers "
        "in 1..2**63-1"
    ) in message


def test_every_problem_is_reported_on_its_own_line(monkeypatch: pytest.MonkeyPatch) -> None:
    entries = [staff(name="", slug="Bad"), staff(slug="ok", groups=[1], group_ids=[0])]
    message = error_of(monkeypatch, **{NAMED: json.dumps(entries)})
    lines = message.splitlines()[1:]
    assert len(lines) == 4, message
    assert all(line.startswith(f"  {NAMED}: entry ") for line in lines), message
    assert "entry 1 (slug 'Bad'): name must be" in message
    assert "entry 1 (slug 'Bad'): slug must be" in message
    assert "entry 2 (slug 'ok'): unknown key 'groups'" in message
    assert "entry 2 (slug 'ok'): group_ids must be" in message


def test_duplicate_slugs_among_named_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    entries = [staff(), staff(name="Other staff", group_ids=[9])]
    message = error_of(monkeypatch, **{NAMED: json.dumps(entries)})
    assert f"{NAMED}: entry 2 (slug 'staff'): slug 'staff' is already used by entry 1" in message


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("[not json", "must be valid JSON"),
        ("", "must be valid JSON"),
        ('{"name": "Staff"}', "must be a JSON list of objects"),
        ("5", "must be a JSON list of objects"),
        ("true", "must be a JSON list of objects"),
    ],
)
def test_named_segments_must_be_a_json_list(
    monkeypatch: pytest.MonkeyPatch, value: str, why: str
) -> None:
    message = error_of(monkeypatch, **{NAMED: value})
    assert line_with(message, why).startswith(NAMED), message


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("{bad", "must be valid JSON"),
        ("", "must be valid JSON"),
        ("[]", "must be a JSON object"),
        ('"rest"', "must be a JSON object"),
        ("rest", "must be a JSON object"),
        ('{"slug": "rest", "group_ids": [1]}', "unknown key 'group_ids': the default segment"),
        ('{"nmae": "Others"}', "unknown key 'nmae' (did you mean 'name'?)"),
        ('{"name": ""}', "name must be a non-empty string"),
        ('{"name": null}', "name must be a non-empty string (got null)"),
        ('{"slug": "Rest"}', SLUG_RULE),
        ('{"slug": "all-users"}', "slug 'all-users' is reserved"),
        ('{"description": 3}', "description must be a string"),
    ],
)
def test_bad_default_segment_is_reported(
    monkeypatch: pytest.MonkeyPatch, value: str, why: str
) -> None:
    message = error_of(monkeypatch, **{DEFAULT: value})
    assert line_with(message, why).startswith(DEFAULT), message


@pytest.mark.parametrize(
    ("named_slug", "default", "why"),
    [
        ("others", '{"slug": "others"}', "slug 'others' is also the slug of"),
        ("rest", None, "the default segment's slug is 'rest'"),
        ("rest", "{}", "the default segment's slug is 'rest'"),
        ("all", '{"name": "Others"}', "the default segment's slug is 'all'"),
    ],
)
def test_the_default_slug_must_differ_from_every_named_slug(
    monkeypatch: pytest.MonkeyPatch, named_slug: str, default: str | None, why: str
) -> None:
    env = {NAMED: json.dumps([staff(slug="first"), staff(slug=named_slug)])}
    if default is not None:
        env[DEFAULT] = default
    message = error_of(monkeypatch, **env)
    assert f"{DEFAULT}: {why}" in message, message
    assert f"{NAMED} entry 2" in message, message


def test_slugs_that_cannot_clash_are_accepted() -> None:
    # `all` and `rest` are free for a named segment when the default resolves to another slug;
    # `group` and `user` are plain words for the URL parser (only `group:<id>` is special).
    s = resolve(
        [staff(slug="all"), staff(slug="rest"), staff(slug="group"), staff(slug="user")],
        {"slug": "others"},
    )
    assert s.all_slugs() == ("all", "rest", "group", "user", "others")


def test_boundaries_are_accepted() -> None:
    entry = staff(slug="9" + "a-" * 24 + "z", group_ids=[1, 2**63 - 1])
    s = resolve([entry])
    assert len(s.named[0].slug) == 50
    assert s.named[0].group_ids == frozenset({1, 2**63 - 1})


def test_a_group_may_be_in_several_segments() -> None:
    s = resolve([staff(group_ids=[1, 2]), staff(slug="mods", group_ids=[2, 3])])
    assert s.named_group_ids == frozenset({1, 2, 3})


@given(st.text(max_size=60))
@hsettings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=200)
def test_any_slug_outside_the_charset_is_refused(slug: str) -> None:
    valid = re.fullmatch(r"[a-z0-9][a-z0-9-]{0,49}", slug) and slug != "all-users"
    try:
        resolve([staff(slug=slug)])
    except SettingsError as exc:
        assert not valid
        assert NAMED in str(exc)
    else:
        assert valid


# --- membership ------------------------------------------------------------------------------


@pytest.fixture
def overlapping() -> Segments:
    return resolve(
        [
            {"name": "Staff", "slug": "staff", "group_ids": [1, 2]},
            {"name": "Students", "slug": "students", "group_ids": [3]},
            {"name": "Teaching", "slug": "teaching", "group_ids": [2, 4]},
        ]
    )


def test_a_user_in_two_groups_of_one_segment_is_listed_once(overlapping: Segments) -> None:
    assert [s.slug for s in overlapping.segments_of_groups([1, 2, 1])] == ["staff", "teaching"]
    assert [s.slug for s in overlapping.segments_of_groups({1})] == ["staff"]
    assert [s.slug for s in overlapping.segments_of_groups([3])] == ["students"]


def test_a_user_in_no_group_is_in_the_default_segment(overlapping: Segments) -> None:
    assert overlapping.segments_of_groups([]) == [overlapping.default]
    assert overlapping.default.slug == "rest"


def test_a_user_only_in_groups_outside_named_segments_is_in_the_default(
    overlapping: Segments,
) -> None:
    assert overlapping.segments_of_groups([5, 6]) == [overlapping.default]


def test_overlapping_segments_come_in_display_order(overlapping: Segments) -> None:
    found = overlapping.segments_of_groups([4, 3, 99])
    assert [s.slug for s in found] == ["students", "teaching"]
    assert not any(s.is_default for s in found)


def test_lookups(overlapping: Segments) -> None:
    assert overlapping.named_group_ids == frozenset({1, 2, 3, 4})
    assert overlapping.all_slugs() == ("staff", "students", "teaching", "rest")
    assert overlapping.by_slug("rest") is overlapping.default
    teaching = overlapping.by_slug("teaching")
    assert teaching is not None and teaching.group_ids == frozenset({2, 4})
    assert overlapping.by_slug("all-users") is None
    assert overlapping.by_slug("all") is None
    assert overlapping.in_display_order()[-1] is overlapping.default


def test_segments_refuse_broken_invariants() -> None:
    default = Segment("rest", "Rest", "", frozenset(), is_default=True)
    named = Segment("staff", "Staff", "", frozenset({1}), is_default=False)
    with pytest.raises(ValueError, match="unique"):
        Segments((named, named), default)
    with pytest.raises(ValueError, match="default"):
        Segments((named,), Segment("rest", "Rest", "", frozenset({1}), is_default=True))
    with pytest.raises(ValueError, match="groups"):
        Segments((Segment("x", "X", "", frozenset(), False),), default)


# --- property: named or default, never both --------------------------------------------------

_slugs = st.from_regex(r"[a-z0-9][a-z0-9-]{0,49}", fullmatch=True).filter(
    lambda s: s not in seg.RESERVED_SLUGS and s not in ("all", "rest")
)
_group_ids = st.one_of(st.integers(1, 12), st.just(2**63 - 1))


@st.composite
def configurations(draw: st.DrawFn) -> tuple[list[dict[str, Any]], dict[str, str] | None]:
    named = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "name": st.text(min_size=1, max_size=10).filter(str.strip),
                    "slug": _slugs,
                    "group_ids": st.lists(_group_ids, min_size=1, max_size=4, unique=True),
                },
                optional={"description": st.text(max_size=10)},
            ),
            max_size=5,
            unique_by=lambda e: e["slug"],
        )
    )
    taken = {e["slug"] for e in named}
    default = draw(
        st.none()
        | st.fixed_dictionaries(
            {},
            optional={
                "name": st.text(min_size=1, max_size=10).filter(str.strip),
                "slug": _slugs.filter(lambda s: s not in taken),
                "description": st.text(max_size=10),
            },
        )
    )
    return named, default


@given(configurations(), st.lists(st.frozensets(_group_ids | st.integers(13, 15)), max_size=8))
@hsettings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=200)
def test_every_user_is_in_named_segments_or_the_default_never_both(
    config: tuple[list[dict[str, Any]], dict[str, str] | None], users: list[frozenset[int]]
) -> None:
    named, default = config
    s = resolve(named, default)  # every valid configuration passes validation
    assert [x.slug for x in s.named] == [e["slug"] for e in named]
    assert len(set(s.all_slugs())) == len(s.all_slugs())
    assert s.named_group_ids == frozenset(g for e in named for g in e["group_ids"])
    for groups in users:
        found = s.segments_of_groups(groups)
        in_default = found == [s.default]
        assert in_default or (found and not any(x.is_default for x in found))
        assert in_default == (not groups & s.named_group_ids)
        expected = [x for x in s.named if x.group_ids & groups]
        assert found == (expected or [s.default])
        assert len({x.slug for x in found}) == len(found)
