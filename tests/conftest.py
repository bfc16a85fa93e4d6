import pytest
import torch
from PIL import Image

from serving_helpers import MODEL, encoded, worker_pids
from whyserve import Explainer, load_model
from whyserve.eval.passes import torch_threads
from whyserve.photos import photo_path

CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="session")
def effnet():
    return load_model("efficientnet_lite0")


@pytest.fixture(scope="session")
def resnet():
    return load_model("resnet18")


@pytest.fixture(scope="session")
def photos():
    return {name: Image.open(photo_path(name)).convert("RGB") for name in ("chelsea", "coffee", "grace_hopper")}


@pytest.fixture(scope="session")
def effnet_batch(effnet, photos):
    """chelsea and coffee, as EfficientNet-Lite0 sees them."""
    return torch.stack([effnet.preprocess(photos["chelsea"]), effnet.preprocess(photos["coffee"])])


@pytest.fixture(scope="session")
def effnet_explainer(effnet):
    return Explainer(effnet)


@pytest.fixture(scope="module")
def one_thread():
    """For loops of many small passes (FGVis): contending threads on a busy CPU make them crawl."""
    with torch_threads(1):
        yield


# -- serving: the service in-process, and (for modules that define ``server``) a TorchServe ------


@pytest.fixture(scope="session")
def chelsea_png(photos):
    return encoded(photos["chelsea"])


@pytest.fixture(scope="session")
def service():
    from whyserve.serving import ExplainService, ServingConfig

    return ExplainService(ServingConfig(model="efficientnet_lite0", layer="head_act", scorecam_chunk=64))


@pytest.fixture(scope="module")
def url(server):
    """The prediction URL of efficientnet_lite0 on the module's ``server``."""
    return f"{server.inference_url}/predictions/{MODEL}"


@pytest.fixture(scope="module")
def first_pids(server):
    return worker_pids(server)
