"""``whyserve eval``: every method on every applicable model, measured on ground truth.

On generated flowers (``whyserve.data.flowers``, seed ``seed``, balanced classes), for each
model (``flowers_cnn``, ``flowers_bcos``) and each of its "why P?" methods, with P the true
class:

- localisation against the class evidence (petals + centre + leaves): energy pointing game,
  pointing game; the grid pointing game (192 x 192) on two kinds of 2x2 grids: "mixed", four
  different classes, every cell scored (B-cos papers' protocol; classes share part colours),
  and "fair" (``make_fair_grid``), one flower of class c and three of class 7 - c, which shares
  no part colour with c, only c's cell scored. ``n_grids=0`` skips both;
- faithfulness: deletion AUC (baseline: black), insertion AUC (baseline: the blurred image),
  Average Drop and Increase in Confidence with the masked-out pixels black (the papers'
  image x map), blurred (the image's Gaussian blur, as insertion's baseline) or the dataset
  mean (per-channel mean of the evaluated images, in the model's input space).

Every figure is a mean with its n and a 95 % percentile bootstrap interval (2000 resamples,
seeded by ``seed``).

For "why P, rather than Q?" with each Q that differs from P in one part: the share of the
map's positive energy on that part, for the contrastive map (``contrastive``; B-cos: ``bcos``
with a contrast) next to the plain map of P from the same model (Grad-CAM; B-cos: ``bcos``).

On the bundled real photos with EfficientNet-Lite0 (no ground truth): the faithfulness
metrics of Grad-CAM and Score-CAM, fast (the 64 most varying channels, as served) and exact.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from whyserve.data.flowers import (
    CLASS_PARTS,
    Grid,
    balanced_labels,
    differing_part,
    generate,
    make_fair_grid,
    make_grid,
    one_part_contrasts,
)
from whyserve.engine import Explainer, ExplainRequest
from whyserve.eval import metrics
from whyserve.eval.passes import EvalBackend, eval_backend, torch_threads
from whyserve.models import load_model

FLOWER_MODELS = ("flowers_cnn", "flowers_bcos")
PLAIN = {"flowers_cnn": ("gradcam", "scorecam"), "flowers_bcos": ("bcos", "gradcam", "scorecam")}
CONTRASTIVE = {"flowers_cnn": (("gradcam", "contrastive"),), "flowers_bcos": (("bcos", "bcos"), ("gradcam", "contrastive"))}
PHOTOS = ("chelsea", "coffee", "rocket", "motorcycle", "grace_hopper")
SCORECAM_CHUNK = 64  # masked images per forward: changes speed, not the maps (tests/test_scorecam.py)
BASELINES = ("black", "blur", "mean")  # what Average Drop / Increase in Confidence blend toward
COLUMNS = (
    "energy PG",
    "PG",
    "grid PG mixed",
    "grid PG fair",
    "deletion AUC ↓",
    "insertion AUC ↑",
    *(f"{name} ({b})" for b in BASELINES for name in ("Avg Drop % ↓", "Incr Conf % ↑")),
)


@dataclass
class Report:
    seed: int = 0
    rows: dict[str, dict[str, list[float]]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(list)))
    pairs: dict[str, dict[str, list[float]]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(list)))
    seconds: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))

    @contextmanager
    def timed(self, row: str, part: str) -> Iterator[None]:
        """Adds the wall time of the block to ``seconds[row][part]``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[row][part] += time.perf_counter() - start

    def timing_markdown(self) -> str:
        """Where the run's time went: seconds per row and part, and each row's total."""
        parts = list(dict.fromkeys(part for row in self.seconds.values() for part in row))
        lines = ["| model / method | " + " | ".join(parts) + " | total |", "|---|" + "---:|" * (len(parts) + 1)]
        for row, seconds in self.seconds.items():
            cells = [f"{seconds[p]:.1f}" if p in seconds else "–" for p in parts]
            lines.append(f"| {row} | " + " | ".join(cells) + f" | {sum(seconds.values()):.1f} |")
        total = sum(sum(row.values()) for row in self.seconds.values())
        return "\n".join([*lines, "| **all** | " + " | ".join("" for _ in parts) + f" | **{total:.1f}** |"])

    def markdown(self) -> str:
        lines = ["| model / method | " + " | ".join(COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
        for row, values in self.rows.items():
            cells = []
            for column in COLUMNS:
                v = values.get(column, [])
                percent = column.startswith(("Avg Drop", "Incr Conf"))
                cells.append(interval_cell(v, self.seed, 100.0 if percent else 1.0) if v else "–")
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
        if self.pairs:
            lines += ["", "One-part contrasts (P and Q differ in one part's colour): share of positive energy on that part", ""]
            lines += ["| model | plain map of P | share | contrastive map P vs Q | share | ratio |", "|---|---|---|---|---|---|"]
            for row, values in self.pairs.items():
                lines.append(_pair_row(row.split(" | "), values["plain"], values["contrastive"], self.seed))
            for part in CLASS_PARTS:
                for row, values in self.pairs.items():
                    if values.get(f"plain {part}"):
                        model, plain, contrastive = row.split(" | ")
                        names = (f"{model}, {part} only", plain, contrastive)
                        lines.append(_pair_row(names, values[f"plain {part}"], values[f"contrastive {part}"], self.seed))
        return "\n".join(lines)


def _pair_row(names, plain: list[float], contrastive: list[float], seed: int) -> str:
    model, plain_name, contrastive_name = names
    a, b = np.mean(plain), np.mean(contrastive)
    ratio = b / a if a else float("inf")
    cells = [interval_cell(values, seed) for values in (plain, contrastive)]
    return f"| {model} | {plain_name} | {cells[0]} | {contrastive_name} | {cells[1]} | {ratio:.2f} |"


def interval_cell(values: list[float], seed: int, scale: float = 1.0) -> str:
    """mean [95 % bootstrap interval] n=..."""
    low, high = metrics.bootstrap_interval(values, seed)
    digits = 1 if scale != 1.0 else 3
    return f"{scale * np.mean(values):.{digits}f} [{scale * low:.{digits}f}, {scale * high:.{digits}f}] n={len(values)}"


def _predictor(backend: EvalBackend):
    def predict(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return torch.softmax(backend.predict(x), dim=1)

    return predict


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).float() / 255.0


def _maps(explainer: Explainer, images: torch.Tensor, requests: list[ExplainRequest], chunk: int = 16) -> list:
    out = []
    for i in range(0, len(requests), chunk):
        out += explainer.explain(images[i : i + chunk], requests[i : i + chunk]).explanations
    return out


def _faithfulness(
    report: Report, row: str, predict, image: torch.Tensor, heatmap: np.ndarray, target: int, steps: int, mean: torch.Tensor
) -> None:
    """``mean``: the dataset-mean image (C, H, W), the third Average Drop baseline."""
    with report.timed(row, "deletion"):
        auc = metrics.deletion_auc(predict, image, heatmap, target, steps=steps, chunk=steps + 1)
        report.rows[row]["deletion AUC ↓"].append(auc)
    with report.timed(row, "insertion"):
        auc = metrics.insertion_auc(predict, image, heatmap, target, steps=steps, chunk=steps + 1)
        report.rows[row]["insertion AUC ↑"].append(auc)
    with report.timed(row, "AD/IC"):
        changes = metrics.confidence_changes(predict, image, heatmap, target, (None, metrics.blurred(image), mean))
    for name, (drop, increase) in zip(BASELINES, changes):
        report.rows[row][f"Avg Drop % ↓ ({name})"].append(drop)
        report.rows[row][f"Incr Conf % ↑ ({name})"].append(increase)


def _mean_image(images: torch.Tensor) -> torch.Tensor:
    """The per-channel mean of ``images`` (N, C, H, W), as one image (C, H, W)."""
    return images.mean(dim=(0, 2, 3))[:, None, None].expand(images.shape[1:])


@dataclass
class _Flowers:
    """The generated images every flower model is measured on."""

    flowers: list
    images: torch.Tensor
    mean: torch.Tensor  # the dataset-mean image, a baseline of Average Drop / Increase in Confidence
    grid_cells: list[tuple[Grid, int]]  # (mixed grid, scored cell)
    fair_cells: list[tuple[Grid, int]]  # (fair grid, its target's cell)


def run(
    n_images: int = 64,
    n_grids: int = 16,
    seed: int = 100,
    photos: bool = True,
    figure: Path | None = None,
    progress: bool = True,
    models: tuple[str, ...] = FLOWER_MODELS,
    steps: int = 32,
    onnx: bool = True,
) -> Report:
    """``steps``: pixel chunks of the deletion and insertion curves; ``onnx``: plain passes on
    ONNX Runtime (``whyserve.eval.passes``; False: all in PyTorch)."""
    report = Report(seed=seed)
    with report.timed("flowers and grids", "generate"):
        flowers = generate(n_images, seed, labels=balanced_labels(n_images))
        grids = [make_grid(seed + 1, g) for g in range(n_grids)]
        images = torch.stack([_to_tensor(f.image) for f in flowers])
        fair = [make_fair_grid(seed + 2, g) for g in range(4 * n_grids)]  # as many scored cells as the mixed grids
    data = _Flowers(flowers, images, _mean_image(images), [(g, c) for g in grids for c in range(4)], fair)
    figure_maps: dict[str, list[np.ndarray]] = {}
    total = sum(len(PLAIN[m]) + len(CONTRASTIVE[m]) for m in models) + (3 if photos else 0)
    bar = tqdm(total=total, desc="whyserve eval", unit="method", file=sys.stderr, disable=not progress)
    # With ONNX Runtime, one PyTorch thread: its work is then many small ops between ONNX Runtime's
    # runs, where a second thread costs more to wake than it saves (5x slower on 2 busy cores).
    with torch_threads(1 if onnx else None):
        for name in models:
            _flower_model(report, name, data, figure_maps, bar, steps, onnx)
        if photos:
            _photos(report, bar, steps, onnx)
    bar.close()
    if figure is not None:
        _figure(figure, flowers[:3], figure_maps)
    return report


def grid_scores(explainer: Explainer, method: str, cells: list[tuple[Grid, int]]) -> list[float]:
    """Grid pointing game of ``method`` for each (grid, scored cell); B-cos scores its signed
    contributions (positive part), the CAMs their heatmaps."""
    if not cells:
        return []
    images = torch.stack([_to_tensor(grid.image) for grid, _ in cells])
    explanations = _maps(explainer, images, [ExplainRequest(method, target=grid.labels[c]) for grid, c in cells])
    scores = []
    for (_, c), e in zip(cells, explanations):
        saliency = e.artifacts.get("contributions", e.heatmap)
        scores.append(metrics.grid_pointing_game(saliency, c))
    return scores


def _flower_model(report: Report, name: str, data: _Flowers, figure_maps: dict, bar, steps: int, onnx: bool) -> None:
    with report.timed(name, "load + export"):
        spec = load_model(name)
        backend = eval_backend(spec, onnx)
    explainer = Explainer(spec, scorecam_chunk=SCORECAM_CHUNK, backend=backend)
    predict = _predictor(backend)
    labels = [f.label for f in data.flowers]
    accuracy = float(np.mean([int(p.argmax()) == y for p, y in zip(predict(data.images), labels)]))
    report.rows[f"{name} (accuracy {accuracy:.1%} on these images)"]  # a header row
    plain_maps: dict[str, list] = {}
    for method in PLAIN[name]:
        plain_maps[method] = _plain(report, name, method, (explainer, predict), data, figure_maps, steps)
        bar.update()
    for plain, contrastive in CONTRASTIVE[name]:
        key = f"{name} | {plain} of P | {contrastive} P vs Q"
        with report.timed(f"{name} / {contrastive} P vs Q", "contrasts"):
            explanations = _contrasts(report, key, contrastive, explainer, data, plain_maps[plain])
        # the figure's contrastive column: each of the first three images against its petals contrast
        figure_maps[f"{name} / {contrastive} (vs other petals)"] = [
            explanations[3 * k].heatmap for k in range(min(3, len(data.flowers)))
        ]
        bar.update()


def _plain(report: Report, name: str, method: str, run: tuple, data: _Flowers, figure_maps: dict, steps: int) -> list:
    """ "Why P?" maps of the true class: localisation, faithfulness and the grid pointing game."""
    (explainer, predict), row = run, f"{name} / {method}"
    with report.timed(row, "maps"):
        explanations = _maps(explainer, data.images, [ExplainRequest(method, target=f.label) for f in data.flowers])
    for f, image, e in zip(data.flowers, data.images, explanations):
        report.rows[row]["energy PG"].append(metrics.energy_pointing_game(e.heatmap, f.evidence_mask))
        report.rows[row]["PG"].append(metrics.pointing_game(e.heatmap, f.evidence_mask))
        _faithfulness(report, row, predict, image, e.heatmap, f.label, steps, data.mean)
    with report.timed(row, "grid PG mixed"), explainer.backend.shared_masks():  # a grid's 4 cells, 1 set of masks
        report.rows[row]["grid PG mixed"] += grid_scores(explainer, method, data.grid_cells)
    with report.timed(row, "grid PG fair"):
        report.rows[row]["grid PG fair"] += grid_scores(explainer, method, data.fair_cells)
    figure_maps[row] = [e.heatmap for e in explanations[:3]]
    if method == "bcos":  # the B-cos papers' rendering: colour from W(x), alpha from its norm
        figure_maps[f"{row} colour image"] = [e.artifacts["bcos_color"] for e in explanations[:3]]
    return explanations


def _contrasts(report: Report, key: str, contrastive: str, explainer: Explainer, data: _Flowers, plain_maps: list) -> list:
    """Each one-part contrast Q of each image: the share of energy on the differing part."""
    rows_, requests, masks, parts = [], [], [], []
    for k, f in enumerate(data.flowers):
        for q in one_part_contrasts(f.label):
            rows_.append(k)
            requests.append(ExplainRequest(contrastive, target=f.label, contrast=q))
            masks.append(f.contrast_mask(q))
            parts.append(differing_part(f.label, q))
    explanations = _maps(explainer, data.images[rows_], requests)
    for k, e, mask, part in zip(rows_, explanations, masks, parts):
        a = metrics.energy_pointing_game(plain_maps[k].heatmap, mask)
        b = metrics.energy_pointing_game(e.heatmap, mask)
        report.pairs[key]["plain"].append(a)
        report.pairs[key]["contrastive"].append(b)
        report.pairs[key][f"plain {part}"].append(a)
        report.pairs[key][f"contrastive {part}"].append(b)
    return explanations


def _photos(report: Report, bar, steps: int, onnx: bool) -> None:
    from whyserve.photos import photo_path

    with report.timed("efficientnet_lite0", "load + export"):
        spec = load_model("efficientnet_lite0")
        backend = eval_backend(spec, onnx)
    explainer = Explainer(spec, scorecam_chunk=SCORECAM_CHUNK, backend=backend)
    predict = _predictor(backend)
    views = []
    for name in PHOTOS:
        try:
            views.append(spec.preprocess(Image.open(photo_path(name))))
        except FileNotFoundError:
            continue
    if not views:
        bar.update(3)
        return
    x = torch.stack(views)
    mean = _mean_image(x)
    targets = [int(p.argmax()) for p in predict(x)]
    for method, request in (("gradcam", {}), ("scorecam (64 channels)", {"channels": 64}), ("scorecam (all channels)", {})):
        row = f"efficientnet_lite0 / {method}, real photos"
        name = method.split()[0]
        with report.timed(row, "maps"):
            explanations = _maps(explainer, x, [ExplainRequest(name, target=t, **request) for t in targets], chunk=5)
        for image, e, t in zip(x, explanations, targets):
            _faithfulness(report, row, predict, image, e.heatmap, t, steps, mean)
        bar.update()


def _figure(path: Path, flowers, maps: dict[str, list[np.ndarray]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = ["image", "ground-truth parts", *list(maps)]
    fig, axes = plt.subplots(len(flowers), len(columns), figsize=(1.9 * len(columns), 2.1 * len(flowers)), squeeze=False)
    part_colours = {"petals": (1.0, 0.3, 0.3), "centre": (1.0, 0.9, 0.2), "leaves": (0.3, 0.9, 0.3), "stem": (0.5, 0.4, 0.3)}
    for r, f in enumerate(flowers):
        truth = np.zeros((*f.image.shape[:2], 3))
        for part, colour in part_colours.items():
            truth[f.masks[part]] = colour
        panels = [f.image, truth] + [maps[c][r] for c in maps]
        for c, (title, panel) in enumerate(zip(columns, panels)):
            ax = axes[r][c]
            if panel.ndim == 2:
                ax.imshow(f.image, alpha=0.35)
                ax.imshow(panel, cmap="jet", alpha=0.65, vmin=0, vmax=1)
            elif panel.shape[-1] == 4:  # RGBA over white, as the B-cos papers show it
                ax.imshow(np.ones_like(panel[..., :3]))
                ax.imshow(panel)
            else:
                ax.imshow(panel)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title.replace(" / ", "\n"), fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
