"""Method options declared once (whyserve.options): the one parser behind every option, and the
README's table generated from the declarations."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from whyserve.errors import InvalidOption
from whyserve.methods import all_methods, get_method
from whyserve.methods.registry import parse_method_options
from whyserve.options import declared, option, options_table, parse, parse_number

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.parametrize(
    ("value", "integer", "expected"),
    [(7, True, 7), ("7", True, 7), (" +7 ", True, 7), ("2.5", False, 2.5), (3, False, 3.0), ("1e-3", False, 0.001)],
)
def test_parse_number_reads_ints_floats_and_their_text(value, integer, expected):
    assert parse_number("n", value, integer, 0, 10) == expected


@pytest.mark.parametrize(
    ("value", "integer", "message"),
    [
        (True, True, "True is not an integer"),
        (2.0, True, "2.0 is not an integer"),
        ("٣", True, "is not an integer"),  # a non-ASCII digit
        ("9" * 19, True, "is not an integer"),  # longer than MAX_INT_DIGITS: refused before int()
        (11, True, "11 is out of range"),
        ("nan", False, "is not a finite number"),
        ("1e999", False, "is not a finite number"),
        (10**400, False, "an integer of 401 digits is not a finite number"),
        ([1], False, "[1] is not a number"),
    ],
)
def test_parse_number_refuses_with_the_range(value, integer, message):
    with pytest.raises(InvalidOption, match=re.escape(message)) as caught:
        parse_number("n", value, integer, 0, 10)
    assert caught.value.option == "n" and caught.value.valid == [f"{'an integer' if integer else 'a number'} from 0 to 10"]


@dataclass(frozen=True)
class Toy:
    mode: str = option("fast", "how", choices=("fast", "exact"))
    count: int | None = option(None, "how many", low=1, none_word="all")
    on: bool = option(True, "a switch")
    lam: float | None = option(None, "a weight", low=0.0, high=1.0, name="lambda")


def test_parse_follows_each_fields_declaration():
    assert parse(Toy, {}) == Toy()
    assert parse(Toy, {"mode": " Exact ", "count": "4", "on": "off", "lambda": "0.5"}) == Toy("exact", 4, False, 0.5)
    assert parse(Toy, {"count": "all", "on": False}) == Toy(count=None, on=False)
    for raw, valid in (
        ({"mode": "slow"}, ["fast", "exact"]),
        ({"count": 0}, ["all", "an integer >= 1"]),
        ({"on": "maybe"}, ["on", "off"]),
        ({"lambda": 2}, ["a number from 0 to 1"]),
    ):
        with pytest.raises(InvalidOption) as caught:
            parse(Toy, raw)
        assert caught.value.option == next(iter(raw)) and caught.value.valid == valid


def test_a_field_without_option_or_of_another_type_is_refused():
    @dataclass(frozen=True)
    class Plain:
        x: int = 1

    @dataclass(frozen=True)
    class Listy:
        x: list = option(None, "a list")  # noqa: RUF009 - option() is dataclasses.field()

    for options in (Plain, Listy):
        with pytest.raises(TypeError):
            declared(options)


def test_an_option_of_another_method_names_the_methods_that_take_it():
    with pytest.raises(InvalidOption) as caught:
        parse_method_options(get_method("gradcam"), {"game": "deletion"})
    assert str(caught.value) == "game: method 'gradcam' takes no game" and caught.value.valid == ["method=fgvis"]


def test_the_readme_table_is_the_generated_one():
    text = README.read_text()
    table = re.search(r"<!-- method options:[^\n]*-->\n(.*?)<!-- end of method options -->", text, re.S)
    assert table is not None, "README lost its generated method-options table"
    assert table.group(1) == options_table({m.name: m.options for m in all_methods()}), "run `whyserve options` into README"


def test_a_methods_own_output_is_served_by_its_kind():
    import base64
    import io

    import numpy as np
    import torch
    from PIL import Image

    from whyserve.data.flowers import make_flower
    from whyserve.serving import ExplainService, ServingConfig

    service = ExplainService(ServingConfig(model="flowers_bcos"))
    buffer = io.BytesIO()
    Image.fromarray(make_flower(2, 0).image).save(buffer, format="PNG")
    ask = {"X-Explain-Method": "bcos", "X-Explain-Outputs": "bcos_color,contributions", "X-Explain-Target": "2"}
    (reply,) = service.handle([({"body": buffer.getvalue()}, ask)])
    body = reply.body["explanation"]
    colour = Image.open(io.BytesIO(base64.b64decode(body["bcos_color"]["data"])))
    assert reply.status == 200 and colour.mode == "RGBA" and colour.size == (96, 96)
    contributions = np.asarray(body["contributions"]["data"], dtype=np.float64)
    assert contributions.shape == (96, 96) and "heatmap" not in body
    x = service.spec.preprocess(Image.open(buffer))[None]
    with torch.no_grad():
        logit = float(service.spec.module(x)[0, 2])
    assert abs(contributions.sum() - logit) < 1e-3 * max(1.0, abs(logit))  # B-cos: the map sums to the logit
