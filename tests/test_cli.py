"""`whyserve explain` for people, and Grad-CAM pointing at the object it names."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import CAT_CLASSES
from whyserve import ExplainRequest


def _whyserve(*args, cwd):
    return subprocess.run([sys.executable, "-m", "whyserve.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_explain_prints_top5_and_writes_heatmap_and_overlay(tmp_path):
    run = _whyserve("explain", "chelsea", "coffee", "--out", str(tmp_path), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    chelsea = run.stdout.split("coffee:")[0]
    assert chelsea.count("%") == 5 and "tiger cat" in chelsea  # top-5 with labels and probabilities
    assert "espresso" in run.stdout
    for name in ("chelsea", "coffee"):
        heatmap = Image.open(tmp_path / f"{name}_heatmap.png")
        assert heatmap.size == (224, 224) and heatmap.mode == "L"
        assert np.asarray(heatmap).max() == 255
        overlay = Image.open(tmp_path / f"{name}_overlay.png")
        assert overlay.width > 224 and overlay.height > 224  # colour bar and caption beside it
    assert "100%" in run.stderr  # the progress bar, for more than one image


def test_contrastive_from_the_command_line(tmp_path):
    run = _whyserve(
        "explain", "chelsea", "--method", "contrastive", "--contrast", "Egyptian cat", "--out", str(tmp_path), cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr
    assert "rather than Egyptian cat" in run.stdout


def test_bad_option_is_a_clear_error(tmp_path):
    run = _whyserve("explain", "chelsea", "--target", "unicorn", "--out", str(tmp_path), cwd=tmp_path)
    assert run.returncode == 2
    assert "unknown class label 'unicorn'" in run.stderr and "valid" in run.stderr


@pytest.mark.parametrize("corner", [(0, 0), (112, 112)])
def test_gradcam_sits_on_the_cat(effnet, effnet_explainer, photos, corner):
    """Chelsea's face in one quadrant of a collage (the coffee cup fills the rest): the
    Grad-CAM of the cat class puts most of its energy on the cat's quadrant."""
    canvas = photos["coffee"].resize((224, 224))
    canvas.paste(photos["chelsea"].resize((168, 112)).crop((28, 0, 140, 112)), corner)
    mask = Image.new("L", (224, 224), 0)
    mask.paste(255, (*corner, corner[0] + 112, corner[1] + 112))
    x = effnet.normalize(canvas)[None]
    top = effnet_explainer.explain(x, [None]).topk(0, 10, effnet.class_names)
    cat = next(p["index"] for p in top if p["index"] in CAT_CLASSES)
    heatmap = effnet_explainer.explain(x, [ExplainRequest("gradcam", cat)]).explanations[0].heatmap
    inside = np.asarray(mask) > 0
    share = heatmap[inside].sum() / heatmap.sum()
    assert share > 0.5, f"only {share:.0%} of the map on the cat's quadrant (a quarter of the image)"


def test_python_m_whyserve_lists_every_registered_method():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "whyserve", "explain", "--help"], capture_output=True, text=True, check=True)
    from whyserve.methods import method_names

    assert {"gradcam", "contrastive", "scorecam", "bcos", "vebi"} <= set(method_names())
    assert "{" + ",".join(method_names()) + "}" in done.stdout and "100% confidence" in done.stdout
