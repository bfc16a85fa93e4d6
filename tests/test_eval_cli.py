"""``whyserve eval`` on a few flowers: the table and the figure."""

import pytest
from PIL import Image

from whyserve.cli import main

pytestmark = pytest.mark.slow


def test_eval_prints_the_method_metric_table_and_writes_the_figure(tmp_path, capsys):
    figure = tmp_path / "eval.png"
    assert main(["eval", "--images", "3", "--grids", "1", "--steps", "8", "--no-photos", "--figure", str(figure)]) == 0
    out = capsys.readouterr().out
    assert "| model / method | energy PG | PG | grid PG |" in out
    for row in ("flowers_cnn / gradcam", "flowers_cnn / scorecam", "flowers_bcos / bcos", "flowers_bcos / gradcam"):
        assert f"| {row} | " in out
    assert "(n=3)" in out and "| flowers_bcos | bcos of P |" in out and "(n=9)" in out
    assert Image.open(figure).size[0] > 1000
