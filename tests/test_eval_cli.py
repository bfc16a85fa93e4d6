"""``whyserve eval`` on a few flowers: the table and the figure."""

import pytest
from PIL import Image

from whyserve.cli import main

pytestmark = pytest.mark.slow


def test_eval_prints_the_method_metric_table_and_writes_the_figure(tmp_path, capsys):
    figure = tmp_path / "eval.png"
    assert main(["eval", "--images", "3", "--grids", "1", "--steps", "8", "--no-photos", "--figure", str(figure)]) == 0
    out = capsys.readouterr().out
    assert "| model / method | energy PG | PG | grid PG mixed | grid PG fair |" in out
    assert "Avg Drop % ↓ (blur)" in out and "Incr Conf % ↑ (mean)" in out
    for row in ("flowers_cnn / gradcam", "flowers_cnn / scorecam", "flowers_bcos / bcos", "flowers_bcos / gradcam"):
        assert f"| {row} | " in out
    # every figure: mean [95 % interval] n=...; 3 images, 1 grid x 4 cells, 4 fair grids, 3 x 3 contrasts
    assert "] n=3 |" in out and "] n=4 |" in out and "| flowers_bcos | bcos of P |" in out and "] n=9 |" in out
    assert Image.open(figure).size[0] > 1000
    # where the time went, per model / method and part
    timing = out.split("Wall time per part (s):")[1]
    assert "| model / method | generate | load + export | maps | deletion |" in timing
    assert "| flowers_bcos / scorecam |" in timing and "| **all** |" in timing


def test_eval_with_no_grids_skips_the_grid_pointing_game(tmp_path, capsys):
    # --no-onnx: every pass in PyTorch (the path the default's ONNX Runtime passes are checked against)
    args = ["eval", "--images", "2", "--grids", "0", "--steps", "4", "--no-photos", "--models", "flowers_cnn", "--no-onnx"]
    assert main([*args, "--figure", str(tmp_path / "eval.png")]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| flowers_cnn / gradcam |"))
    cells = [c.strip() for c in row.split("|")[2:-1]]
    assert cells[2] == cells[3] == "–" and "n=2" in cells[0]
