"""compat.sort_key: bytes that sort exactly as Python orders the values they encode.

PriorityQueue stores sort_key(item) as the liteq rank, which SQLite compares byte by
byte (shorter first on a common prefix), as Python compares bytes.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liteq.compat import sort_key

ints = st.integers() | st.integers(-(2**2100), 2**2100)  # past the 252-byte term form
floats = st.floats(allow_nan=False)
numbers = st.one_of(
    ints,
    floats,
    st.booleans(),
    st.fractions(),
    st.decimals(allow_nan=False, min_value=Decimal("-1e30"), max_value=Decimal("1e30")),
    st.decimals(allow_nan=False, allow_infinity=True, places=40),
    st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 1.7976931348623157e308, 0.1, 1 / 3,
                     Fraction(1, 10), Decimal("0.1"), 2**53, 2**53 + 1, float(2**53)]),
)
texts = st.text() | st.text(alphabet="\x00\x01ab\U0001f600é", max_size=6)
binaries = st.binary() | st.binary(max_size=4).map(lambda b: b.replace(b"\x01", b"\x00"))
scalars = numbers | texts | binaries


def same_order(values: list[Any]) -> None:
    """sorted() and a sort by sort_key give the same list, equal items included
    (both sorts are stable, so items Python finds equal keep their places)."""
    expected = sorted(values)
    got = sorted(values, key=sort_key)
    assert [repr(v) for v in got] == [repr(v) for v in expected]


@given(st.lists(numbers))
def test_numbers_of_every_kind_sort_as_python_sorts_them(values: list[Any]) -> None:
    same_order(values)


@given(st.lists(texts))
def test_strings_sort_by_code_point_as_python_sorts_them(values: list[str]) -> None:
    same_order(values)


@given(st.lists(binaries))
def test_bytes_sort_as_python_sorts_them(values: list[bytes]) -> None:
    same_order(values)


@given(st.lists(st.tuples(numbers, texts)))
def test_priority_and_payload_tuples_sort_as_python_sorts_them(values: list[Any]) -> None:
    same_order(values)


@given(st.lists(st.lists(numbers, max_size=4).map(tuple)))
def test_tuples_of_different_lengths_sort_as_python_sorts_them(values: list[Any]) -> None:
    same_order(values)


@given(st.lists(st.tuples(texts, st.tuples(numbers, binaries), st.lists(ints, max_size=3))))
def test_nested_tuples_and_lists_sort_as_python_sorts_them(values: list[Any]) -> None:
    same_order(values)


anything = st.recursive(
    scalars | st.none() | st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    lambda inner: st.lists(inner, max_size=3) | st.lists(inner, max_size=3).map(tuple),
    max_leaves=8,
)


def pair_of(values: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Any, Any]]:
    return st.tuples(values, values)


# Pairs that Python can usually compare: two values of one family, or two tuples
# that share a first element (so that later elements, of any kind, decide).
pairs = st.one_of(
    pair_of(numbers),
    pair_of(texts),
    pair_of(binaries),
    pair_of(st.tuples(numbers, texts)),
    pair_of(st.lists(numbers, max_size=3).map(tuple)),
    pair_of(st.lists(texts | numbers, max_size=3)),
    st.tuples(anything, anything, anything).map(lambda t: ((t[0], t[1]), (t[0], t[2]))),
    pair_of(anything),
)


@settings(max_examples=500)
@given(pairs)
def test_any_two_values_python_can_order_get_keys_in_that_order(pair: tuple[Any, Any]) -> None:
    a, b = pair
    try:
        less, greater = a < b, b < a
    except TypeError:
        return  # Python cannot order them: any fixed order is acceptable
    ka, kb = sort_key(a), sort_key(b)
    if less:
        assert ka < kb
    elif greater:
        assert ka > kb
    elif a == b:
        assert ka == kb


@given(anything)
def test_a_key_is_the_same_every_time(value: Any) -> None:
    assert sort_key(value) == sort_key(value)


@given(st.lists(scalars, min_size=2, max_size=2), st.lists(scalars, min_size=2, max_size=2))
def test_keys_are_prefix_free_so_tuples_compare_element_by_element(a: Any, b: Any) -> None:
    # If the key of a first element were a prefix of another's, the second element
    # would leak into the comparison of the first.
    try:
        expected = (tuple(a) > tuple(b)) - (tuple(a) < tuple(b))
    except TypeError:
        return
    got = (sort_key(tuple(a)) > sort_key(tuple(b))) - (sort_key(tuple(a)) < sort_key(tuple(b)))
    assert got == expected


def test_examples_where_floats_and_exact_numbers_differ() -> None:
    # 0.1 as a float is slightly more than 1/10; 2**53 + 1 is not a float.
    values = [0.1, Fraction(1, 10), Decimal("0.1"), 2**53 + 1, float(2**53), 2**53,
              -0.0, 0, False, float("-inf"), -(10**400), 10**400, float("inf")]
    same_order(values)
    assert sort_key(Fraction(1, 10)) == sort_key(Decimal("0.1"))
    assert sort_key(-0.0) == sort_key(0) == sort_key(False)
    assert sort_key(1) == sort_key(1.0) == sort_key(True) == sort_key(Decimal("1.000"))


def test_nan_sorts_after_infinity_and_values_python_cannot_order_share_one_key() -> None:
    assert sort_key(float("inf")) < sort_key(float("nan")) == sort_key(Decimal("nan"))
    assert sort_key(None) == sort_key({"a": 1}) == sort_key({1, 2})
    assert sort_key((1, None, 2)) < sort_key((1, None, 3))
    # The end of a tuple sorts before any element, unorderable ones included.
    assert ((1,), 2) < ((1, None),)
    assert sort_key(((1,), 2)) < sort_key(((1, None),))


def test_a_decimal_with_an_enormous_exponent_is_refused() -> None:
    assert sort_key(Decimal("1e-9999")) < sort_key(Decimal("1e-9998"))
    with pytest.raises(ValueError, match="exponent"):
        sort_key(Decimal("1e99999999"))
