"""Where one request's time goes, in process (the TorchServe frontend excluded): decode,
resize/crop, normalize, forward, Grad-CAM, PNG + JSON encoding, and the whole
``ExplainService.handle`` call, EfficientNet-Lite0 on PyTorch and ONNX Runtime.

Interleaved rounds, median per row, so a busy neighbour slows every row alike.

    .venv/bin/python benchmarks/request_breakdown.py [--rounds 20] [--photo chelsea]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from whyserve import ExplainRequest
from whyserve.backends.onnx.runtime import export_onnx
from whyserve.photos import available_photos, photo_path
from whyserve.render import encode, heatmap_image
from whyserve.serving.images import decode_image
from whyserve.serving.protocol import ServeOptions, build_response
from whyserve.serving.service import ExplainService, ServingConfig


def stages(service: ExplainService, data: bytes) -> dict[str, object]:
    spec, explainer = service.spec, service.explainer
    image = decode_image(data)
    view = spec.view(image)
    x = spec.normalize(view)[None]
    result = explainer.explain(x, [ExplainRequest("gradcam")])
    explanation, predictions = result.explanations[0], result.topk(0, 5, spec.class_names)
    return {
        "decode": lambda: decode_image(data),
        "resize + crop": lambda: spec.view(image),
        "normalize": lambda: spec.normalize(view),
        "forward (prediction only)": lambda: explainer.predict(x),
        "forward + Grad-CAM": lambda: explainer.explain(x, [ExplainRequest("gradcam")]),
        "heatmap PNG, compress_level 6 (PIL default)": lambda: encode(heatmap_image(explanation.heatmap)),
        "heatmap PNG, compress_level 1": lambda: encode(heatmap_image(explanation.heatmap), compress_level=1),
        "response (PNG + JSON)": lambda: json.dumps(build_response(predictions, explanation, ServeOptions(), spec.class_names)),
        "whole handle(), prediction only": lambda: service.handle([({"body": data}, {"X-Explain-Method": "none"})]),
        "whole handle(), Grad-CAM": lambda: service.handle([({"body": data}, {"X-Explain-Method": "gradcam"})]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--photo", default="chelsea", choices=available_photos())
    args = parser.parse_args()
    data = Path(photo_path(args.photo)).read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        onnx = export_onnx(__import__("whyserve").load_model("efficientnet_lite0"), Path(tmp) / "m.onnx")
        services = {
            "PyTorch": ExplainService(ServingConfig(model="efficientnet_lite0", layer="head_act")),
            "ONNX Runtime": ExplainService(ServingConfig(model="efficientnet_lite0", backend="onnxruntime", weights=str(onnx))),
        }
    rows = {backend: stages(service, data) for backend, service in services.items()}
    times = {(b, name): [] for b, row in rows.items() for name in row}
    for _ in range(args.rounds + 1):  # the first round warms up
        for (backend, name), values in times.items():
            start = time.perf_counter()
            rows[backend][name]()
            values.append((time.perf_counter() - start) * 1e3)
    print(f"one request in process, {args.photo} ({len(data):,} bytes), median of {args.rounds} interleaved rounds, ms\n")
    print("| stage | " + " | ".join(rows) + " |")
    print("|---|" + "---:|" * len(rows))
    for name in next(iter(rows.values())):
        print(f"| {name} | " + " | ".join(f"{statistics.median(times[b, name][1:]):.2f}" for b in rows) + " |")


if __name__ == "__main__":
    main()
