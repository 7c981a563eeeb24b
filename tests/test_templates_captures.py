"""Templates and captures of user journeys: pure functions (loadgen.templates, loadgen.captures)."""

from __future__ import annotations

import random
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadgen.captures import (
    CookieJar,
    capture_of,
    check_failure,
    compile_capture,
    parse_json_path,
)
from loadgen.flows import Capture, Check, Pause
from loadgen.templates import RenderContext, TemplateError, compile_template


def render(text: str, values: dict[str, str] | None = None, seed: int = 1) -> str:
    return compile_template(text).render(values or {}, RenderContext(random.Random(seed)))


# --- templates


def test_variables_and_literal_text() -> None:
    t = compile_template('{"user": "{{ user }}", "p": "{{password}}"} {{ env.HOME_DIR }}')
    assert t.variables() == ("user", "password", "env.HOME_DIR")
    assert not t.static
    values = {"user": "alice", "password": "pw", "env.HOME_DIR": "/h"}
    assert render(t.text, values) == '{"user": "alice", "p": "pw"} /h'


@given(st.text().filter(lambda s: "{{" not in s))
def test_text_without_placeholders_is_static_and_renders_to_itself(text: str) -> None:
    t = compile_template(text)
    assert t.static
    assert render(text) == text


def test_builtins() -> None:
    ctx = RenderContext(random.Random(3))
    t = compile_template("{{ counter }}-{{ counter }}")
    assert t.render({}, ctx) == "1-2"
    assert t.render({}, ctx) == "3-4"  # the counter is the agent's, across instances
    ints = {int(render("{{ random_int(1, 3) }}", seed=s)) for s in range(60)}
    assert ints == {1, 2, 3}
    choices = {render('{{ random_choice("a", "b,c", "d\\"e") }}', seed=s) for s in range(60)}
    assert choices == {"a", "b,c", 'd"e'}
    u = uuid.UUID(render("{{ uuid }}"))
    assert u.version == 4
    assert render("{{ uuid }}", seed=1) != render("{{ uuid }}", seed=2)


def test_a_missing_variable_raises_key_error() -> None:
    with pytest.raises(KeyError):
        render("/buy/{{ item }}")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{{ }}", "empty placeholder"),
        ("/a/{{ item", "unclosed"),
        ("{{ random_int(5, 1) }}", "above its high end"),
        ("{{ random_int(a, 1) }}", "two whole numbers"),
        ("{{ random_choice(a) }}", "quoted strings"),
        ("{{ eval(1) }}", "unknown function 'eval'"),
        ("{{ a.b }}", "not a variable name or a built-in"),
        ("{{ x + 1 }}", "not a variable name"),
    ],
)
def test_bad_templates_say_why(text: str, reason: str) -> None:
    with pytest.raises(TemplateError, match=reason):
        compile_template(text)


# --- captures


def test_json_paths() -> None:
    assert parse_json_path("$.items[0].id") == ("items", 0, "id")
    assert parse_json_path('$["a b"][-1]') == ("a b", -1)
    assert parse_json_path("$") == ()
    for bad in ("items.id", "$.", "$[x]", "$..a"):
        with pytest.raises(ValueError):
            parse_json_path(bad)


BODY = b'{"token": "t-1", "items": [{"id": 7, "ok": true}, {"id": 8}], "n": null, "o": {"a": 1}}'
HEADERS = [
    (b"Content-Type", b"application/json"),
    (b"Set-Cookie", b"session=abc; Path=/; HttpOnly"),
    (b"Set-Cookie", b"gone=1; Max-Age=0"),
    (b"Location", b"/next"),
]


@pytest.mark.parametrize(
    ("expr", "found"),
    [
        ("$.token", "t-1"),
        ("$.items[0].id", "7"),
        ("$.items[-1].id", "8"),
        ("$.items[0].ok", "true"),
        ("$.n", "null"),
        ("$.o", '{"a":1}'),
        ("$.items[5].id", None),
        ("$.missing", None),
        ("header:location", "/next"),
        ("header:X-None", None),
        ("cookie:session", "abc"),
        ("cookie:gone", None),
        ('regex:"id": (\\d+)', "7"),
        ("regex:token", "token"),
        ("regex:nothing-like-this", None),
    ],
)
def test_captures(expr: str, found: str | None) -> None:
    source, body = capture_of(expr)
    extract = compile_capture(Capture("v", source, body))
    assert extract(HEADERS, BODY) == found


def test_a_json_capture_of_a_body_that_is_not_json_finds_nothing() -> None:
    extract = compile_capture(Capture("v", "json", "$.a"))
    assert extract([], b"<html>") is None
    assert extract([], b"\xff\xfe") is None


@pytest.mark.parametrize("text", ["token", "header:", "xpath://a", "regex:"])
def test_capture_syntax_errors(text: str) -> None:
    with pytest.raises(ValueError, match="expected a JSON path"):
        capture_of(text)


def test_a_body_nested_too_deep_for_the_json_parser_finds_nothing() -> None:
    """The body is the server's: JSON nested past the parser's recursion limit fails the capture or check
    (the step fails), instead of raising RecursionError in the engine's response callback."""
    body = b"[" * 100_000
    assert compile_capture(Capture("v", "json", "$.a"))([], body) is None
    assert check_failure(Check(json=(("$.a", 1),)), 200, body) is not None


def test_a_regex_capture_reads_the_body_as_text() -> None:
    """A pattern is text: \\w, . and (?i) mean characters of a UTF-8 body, not its bytes (as bytes, \\w
    stopped at the first letter beyond ASCII and . took half of one)."""
    body = "name=Jürgen; city=Köln; Ä=1".encode()
    assert compile_capture(Capture("v", "regex", r"name=(\w+)"))([], body) == "Jürgen"
    assert compile_capture(Capture("v", "regex", r"city=(..)"))([], body) == "Kö"
    assert compile_capture(Capture("v", "regex", r"(?i)ä=(\d)"))([], body) == "1"


def test_a_bad_regex_is_refused_when_compiled() -> None:
    with pytest.raises(ValueError, match="regex"):
        compile_capture(Capture("v", "regex", "(unclosed"))


def test_checks() -> None:
    assert check_failure(Check(), 200, b"") is None
    assert check_failure(Check(), 404, b"") == "status 404"
    assert check_failure(Check(status=(404,)), 404, b"") is None
    assert check_failure(Check(status=(200, 201)), 204, b"") == "status 204"
    assert check_failure(Check(contains="t-1"), 200, BODY) is None
    assert check_failure(Check(contains="t-2"), 200, BODY) == "body lacks the text"
    assert check_failure(Check(json=(("$.items[0].ok", True),)), 200, BODY) is None
    assert check_failure(Check(json=(("$.items[0].id", 7),)), 200, BODY) is None
    assert check_failure(Check(json=(("$.items[0].id", "7"),)), 200, BODY) is not None  # types differ
    assert check_failure(Check(json=(("$.items[0].ok", 1),)), 200, BODY) is not None  # true is not 1
    assert check_failure(Check(json=(("$.x", 1),)), 200, b"nope") is not None


def test_a_json_check_compares_numbers_as_json_does() -> None:
    """JSON has one kind of number: a server writing 7.0 (Python's json, most serializers of a float) meets
    a check written 7, and the other way round; true is still not 1."""
    assert check_failure(Check(json=(("$.n", 7),)), 200, b'{"n": 7.0}') is None
    assert check_failure(Check(json=(("$.n", 7.0),)), 200, b'{"n": 7}') is None
    assert check_failure(Check(json=(("$.n", 7),)), 200, b'{"n": 7.5}') is not None
    assert check_failure(Check(json=(("$.n", 1),)), 200, b'{"n": true}') is not None
    assert check_failure(Check(json=(("$.n", True),)), 200, b'{"n": 1}') is not None


def test_a_cookie_with_an_odd_max_age_is_kept_not_a_crash() -> None:
    """Header bytes are the server's: a Max-Age the cookie rules cannot read (here a superscript two, which
    str.isdigit takes for a digit) is ignored, as RFC 6265 says, instead of raising in the engine's
    callback."""
    jar = CookieJar()
    jar.update([(b"Set-Cookie", b"a=1; Max-Age=\xb2"), (b"Set-Cookie", b"b=2; Max-Age=-\xb2")])
    assert jar.header() == "a=1; b=2"


def test_cookie_jar() -> None:
    jar = CookieJar()
    assert jar.header() is None
    jar.update(HEADERS)
    assert jar.header() == "session=abc"
    jar.update([(b"set-cookie", b'b="2"'), (b"set-cookie", b"session=new")])
    assert jar.header() == "session=new; b=2"
    jar.update([(b"Set-Cookie", b"session=; Max-Age=0")])
    assert jar.header() == "b=2"
    jar.update([(b"Set-Cookie", b"no-equals-sign")])
    assert jar.header() == "b=2"


def test_pauses() -> None:
    rng = random.Random(5)
    assert Pause("fixed", 2.0, 2.0).draw(rng) == 2.0
    draws = [Pause("uniform", 1.0, 3.0).draw(rng) for _ in range(500)]
    assert min(draws) >= 1.0 and max(draws) <= 3.0 and 1.8 < sum(draws) / 500 < 2.2
    exp = [Pause("exponential", 1.0, 1.0).draw(rng) for _ in range(4000)]
    assert max(exp) <= 10.0 and 0.9 < sum(exp) / 4000 < 1.1
