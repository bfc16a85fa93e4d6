"""A new explanation method is one class: registered here, in this file alone, it is served end
to end through the service layer (parsing, its own option, resolving, the engine, the response)."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image

from serving_helpers import encoded
from whyserve import ExplainRequest, cli
from whyserve.data.flowers import make_flower
from whyserve.methods import REGISTRY, Explanation, Method, MethodBatch, Needs, register
from whyserve.methods.base import cam_explanations
from whyserve.methods.registry import methods_for
from whyserve.options import option
from whyserve.serving import ExplainService, ServingConfig


@dataclass(frozen=True)
class PowerOptions:
    power: int = option(1, "the exponent of the mean activation", low=1, high=3)


class Power(Method):
    """A toy method: the target layer's mean activation raised to ``power`` (its own option)."""

    name = "toy_power"
    needs = Needs.MASKED_FORWARDS
    options = PowerOptions
    help = "a toy: mean activation ** power"

    def compute(self, batch: MethodBatch) -> list[Explanation]:
        maps = [batch.activations[i].clamp(min=0).mean(0) ** r.options.power for i, r in zip(batch.rows, batch.requests)]
        return cam_explanations(batch, torch.stack(maps))


@pytest.fixture(scope="module")
def service():
    register(Power)
    try:
        yield ExplainService(ServingConfig(model="flowers_cnn", scorecam_chunk=64))
    finally:
        del REGISTRY[Power.name]


@pytest.fixture(scope="module")
def flower():
    return make_flower(3, 0)


def _heatmap(body: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(body["explanation"]["heatmap"]["data"]))), dtype=float) / 255


def test_a_method_registered_in_a_test_file_is_served(service, flower):
    png = encoded(Image.fromarray(flower.image))
    ask = [({"body": png}, {"X-Explain-Method": "toy_power", "X-Explain-Power": str(p)}) for p in (1, 3)]
    ask.append(({"body": png}, {"X-Explain-Method": "gradcam"}))  # in the same batch as another method
    replies = service.handle(ask)
    assert [r.status for r in replies] == [200, 200, 200]
    one, three, gradcam = (r.body for r in replies)
    assert one["explanation"]["method"] == "toy_power" and gradcam["explanation"]["method"] == "gradcam"
    assert one["explanation"]["target"]["index"] == one["predictions"][0]["index"]
    # the engine's own numbers: mean positive activation of the target layer, scaled as every CAM
    x = service.spec.preprocess(Image.fromarray(flower.image))[None]
    with torch.no_grad():
        _, activations = service.explainer.backend.forward(x, graph=False)
    layer = activations[0].clamp(min=0).mean(0)
    for body, power in ((one, 1), (three, 3)):
        expected = (layer**power - (layer**power).min()) / ((layer**power).max() - (layer**power).min())
        engine = service.explainer.explain(x, [ExplainRequest("toy_power", power=power)]).explanations[0]
        assert np.abs(engine.layer_heatmap - expected.numpy()).max() < 1e-5
        assert np.abs(_heatmap(body) - engine.heatmap).max() <= 1 / 255
    assert np.abs(_heatmap(one) - _heatmap(three)).max() > 0.05  # the option changes the map


def test_its_option_is_checked_by_the_method_and_listed_by_the_protocol(service, flower):
    png = encoded(Image.fromarray(flower.image))
    bad, wrong_method = service.handle(
        [
            ({"body": png}, {"X-Explain-Method": "toy_power", "X-Explain-Power": "7"}),
            ({"body": png}, {"X-Explain-Method": "gradcam", "X-Explain-Power": "2"}),
        ]
    )
    assert bad.status == 400 and bad.body["error"]["valid"] == ["an integer from 1 to 3"]
    assert wrong_method.status == 400 and wrong_method.body["error"]["valid"] == ["method=toy_power"]
    assert "toy_power" in service.methods and Power.name in {m.name for m in methods_for(service.spec)}


def test_its_one_declared_field_reaches_the_cli_the_config_and_the_docs_table(service, flower, capsys):
    # the CLI: a flag with the declared range and default, parsed by the method
    with pytest.raises(SystemExit):
        cli.main(["explain", "--help"])
    assert "--power N" in capsys.readouterr().out.replace("\n", " ")
    assert cli.main(["explain", "x.png", "--model", "flowers_cnn", "--method", "toy_power", "--power", "9"]) == 2
    assert "power: 9 is out of range (valid: an integer from 1 to 3)" in capsys.readouterr().err
    # the config: a model default of the option, checked at load
    png = encoded(Image.fromarray(flower.image))
    configured = ExplainService(ServingConfig(model="flowers_cnn", method_options={"toy_power": {"power": 3}}))
    (reply,) = configured.handle([({"body": png}, {"X-Explain-Method": "toy_power"})])
    (three,) = service.handle([({"body": png}, {"X-Explain-Method": "toy_power", "X-Explain-Power": "3"})])
    assert reply.status == 200 and reply.body["explanation"]["heatmap"] == three.body["explanation"]["heatmap"]
    with pytest.raises(ValueError, match=r"method_options.toy_power: power: 0 is out of range"):
        ExplainService(ServingConfig(model="flowers_cnn", method_options={"toy_power": {"power": 0}}))
    # the docs' option table (`whyserve options`)
    assert cli.main(["options"]) == 0
    assert "| toy_power | `power` | an integer from 1 to 3 | 1 | the exponent of the mean activation |" in capsys.readouterr().out


def test_gradient_and_gradient_free_methods_share_a_batch_outside_inference_mode(service, flower):
    # Before the registry, Score-CAM ran with the grad mode the capture hook had turned on, so a
    # batch mixing it with Grad-CAM raised (outside inference mode, as the service runs) and the
    # service retried it one request at a time.
    x = service.spec.preprocess(Image.fromarray(flower.image))[None].repeat(3, 1, 1, 1)
    requests = [ExplainRequest("gradcam"), ExplainRequest("scorecam"), ExplainRequest("toy_power", power=2)]
    together = service.explainer.explain(x, requests).explanations
    alone = [service.explainer.explain(x[:1], [r]).explanations[0] for r in requests]
    assert [e.method for e in together] == ["gradcam", "scorecam", "toy_power"]
    for a, b in zip(together, alone):
        assert np.abs(a.heatmap - b.heatmap).max() <= 1e-5
