"""Key templates: checked against the signature when decorating, resolved through it per call."""

from __future__ import annotations

from typing import Any

import pytest

import stackquery as sq
from stackquery.decorators._key_template import KeyTemplate


def one(user_id: int) -> None: ...


def order(user_id: int, order_id: int, region: str = "eu") -> None: ...


def keyword_only(a: int, *, b: int = 2) -> None: ...


def two(a: Any = None, b: Any = None) -> None: ...


def nothing() -> None: ...


class TestResolution:
    def test_static_template_has_one_part(self) -> None:
        """A template without placeholders maps every call to its text."""
        template = KeyTemplate.for_function("flags", nothing)
        assert template.is_static
        assert template.parts((), {}) == ("flags",)

    def test_positional_placeholder_takes_the_first_parameter(self) -> None:
        """`{}` takes the first positional parameter, passed by position or keyword."""
        template = KeyTemplate.for_function("user:{}", one)
        assert template.parts((42,), {}) == ("user:{}", 42)
        assert template.parts((), {"user_id": 42}) == ("user:{}", 42)

    def test_numbered_placeholders_take_parameters_by_position(self) -> None:
        """`{1}:{0}` takes the second then the first positional parameter."""
        template = KeyTemplate.for_function("{1}:{0}", order)
        assert template.parts((1, 2), {}) == ("{1}:{0}", 2, 1)

    def test_named_placeholders_resolve_through_the_signature_with_defaults(self) -> None:
        """Named placeholders take values passed any way, defaults applied."""
        template = KeyTemplate.for_function("order:{user_id}:{order_id}:{region}", order)
        expected = ("order:{user_id}:{order_id}:{region}", 7, 9, "eu")
        assert template.parts((7, 9), {}) == expected
        assert template.parts((7,), {"order_id": 9}) == expected
        assert template.parts((), {"order_id": 9, "user_id": 7}) == expected
        assert template.parts((7, 9, "us"), {})[-1] == "us"

    def test_keyword_only_parameter_can_be_named(self) -> None:
        """A keyword-only parameter is a valid named placeholder, default included."""
        template = KeyTemplate.for_function("k:{a}:{b}", keyword_only)
        assert template.parts((1,), {}) == ("k:{a}:{b}", 1, 2)
        assert template.parts((1,), {"b": 5}) == ("k:{a}:{b}", 1, 5)

    def test_default_key_holds_every_argument(self) -> None:
        """Without a template the key is every parameter's value, in order."""
        template = KeyTemplate.for_function(None, two)
        assert template.parts((), {"a": 1}) == (1, None)
        assert template.parts((), {"b": 1}) == (None, 1)

    def test_callable_key_gets_the_call_arguments(self) -> None:
        """A callable key is called with the call's arguments; its result is the one part."""
        template = KeyTemplate.for_function(lambda user_id: f"u{user_id}", one)
        assert template.is_callable
        assert template.parts((3,), {}) == ("u3",)

    def test_values_not_text_make_the_key(self) -> None:
        """Arguments whose text joins the same way still make two keys."""
        template = KeyTemplate.for_function("order:{}:{}", order)
        assert template.parts(("1:2", "3"), {}) != template.parts(("1", "2:3"), {})

    def test_call_that_does_not_fit_raises_type_error(self) -> None:
        """Arguments the function would refuse are refused the same way."""
        template = KeyTemplate.for_function("user:{}", one)
        with pytest.raises(TypeError, match=r"missing a required argument: 'user_id'"):
            template.parts((), {})
        with pytest.raises(TypeError, match=r"unexpected keyword argument 'nope'"):
            template.parts((1,), {"nope": 2})


class TestRefusedWhenDecorating:
    @pytest.mark.parametrize(
        ("text", "func", "message"),
        [
            (
                "user:{id}",
                one,
                r"^key template 'user:\{id\}' of one\(\) names 'id', which is not a parameter "
                r"of one\(\) \(parameters: user_id\)$",
            ),
            (
                "x:{}:{}",
                one,
                r"^key template 'x:\{\}:\{\}' of one\(\) has a positional placeholder #1 but "
                r"one\(\) has 1 positional parameter\(s\)$",
            ),
            (
                "{2}",
                one,
                r"^key template '\{2\}' of one\(\) has a positional placeholder #2 but one\(\) "
                r"has 1 positional parameter\(s\)$",
            ),
            (
                "x:{}",
                nothing,
                r"^key template 'x:\{\}' of nothing\(\) has a positional placeholder #0 but "
                r"nothing\(\) has 0 positional parameter\(s\)$",
            ),
            (
                "{}:{1}",
                order,
                r"^key template '\{\}:\{1\}' of order\(\) mixes '\{\}' and numbered placeholders$",
            ),
            (
                "{user_id!r}",
                one,
                r"^key template '\{user_id!r\}' of one\(\): conversions and format specs are not "
                r"supported",
            ),
            (
                "{user_id:>5}",
                one,
                r"^key template '\{user_id:>5\}' of one\(\): conversions and format specs",
            ),
            (
                "{user_id.real}",
                one,
                r"^key template '\{user_id.real\}' of one\(\): placeholder \{user_id.real\} is "
                r"neither a parameter name nor a position",
            ),
            ("user:{", one, r"^key template 'user:\{' of one\(\) is malformed: "),
        ],
    )
    def test_template_that_does_not_fit_is_refused(
        self, text: str, func: Any, message: str
    ) -> None:
        """A placeholder that cannot resolve is a KeyTemplateError (a ValueError) at once."""
        with pytest.raises(sq.KeyTemplateError, match=message) as info:
            KeyTemplate.for_function(text, func)
        assert isinstance(info.value, ValueError)

    def test_key_of_another_type_is_refused(self) -> None:
        """A key that is neither a string, a callable nor None is a TypeError."""
        with pytest.raises(TypeError, match=r"^key must be a template string, a callable or None"):
            KeyTemplate.for_function(42, one)  # type: ignore[arg-type]

    def test_cache_refuses_a_bad_template_when_decorating(self) -> None:
        """@cache checks the template against the function at decoration time."""
        with pytest.raises(sq.KeyTemplateError, match=r"names 'uid', which is not a parameter"):

            @sq.cache(60, key="user:{uid}")
            async def get_user(user_id: int) -> None: ...
