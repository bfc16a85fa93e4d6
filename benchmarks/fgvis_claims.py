"""FGVis's claims, measured on ground truth (issue 10); prints one markdown table per claim.

1. energy pointing game on the flowers' class-defining parts: FGVis (both games) vs Grad-CAM,
   Score-CAM (flowers_cnn) and B-cos (flowers_bcos), the same images, target = true class;
2. the defense on an absent class (every class part a different colour: label ^ 7): share of
   preservation runs whose e reaches p > 0.5, with and without the defense; and the present
   class's probability on e with and without;
3. adversarial patches: targeted PGD (L_inf, EPS in [0, 1] pixel units, inside a 24 x 24
   background corner square) on flowers_cnn to label ^ 7; share of each map's energy on the
   patch vs on the flower's class parts, for the adversarial class;
4. deletion / insertion AUC of EfficientNet-Lite0 on the bundled photos: FGVis vs Grad-CAM and
   Score-CAM (64 channels);
5. cascading randomisation (Adebayo et al. 2018) of flowers_cnn from the top: Spearman rank
   correlation of each map with the trained model's, per step, FGVis and Grad-CAM.

    .venv/bin/python benchmarks/fgvis_claims.py [--n 32] [--n-defense 64] [--n-adv 16]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses

import numpy as np
import torch
from PIL import Image
from scipy.stats import spearmanr

from whyserve import Explainer, ExplainRequest, load_model
from whyserve.data.flowers import balanced_labels, generate
from whyserve.eval import metrics
from whyserve.methods.fgvis import FGVisOptions, optimise
from whyserve.photos import available_photos, photo_path

EPS, PATCH, PGD_STEPS = 0.5, 24, 40
CHUNK = 32


def black(spec) -> torch.Tensor:
    return spec.normalize(Image.new("RGB", spec.input_size[::-1]))


def fgvis(spec, x, targets, **options) -> object:
    """FGVis in chunks; returns (heatmaps (N, H, W), probabilities (N,))."""
    heat, prob = [], []
    for i in range(0, len(x), CHUNK):
        n = len(x[i : i + CHUNK])
        r = optimise(spec.module, x[i : i + CHUNK], targets[i : i + CHUNK], [FGVisOptions(**options)] * n, black(spec))
        heat.append(r.heatmaps)
        prob.append(r.probabilities)
    return torch.cat(heat).numpy(), torch.cat(prob).numpy()


def cams(spec, x, targets, method, **request) -> np.ndarray:
    explainer = Explainer(spec)
    out = []
    for i in range(0, len(x), 16):
        reqs = [ExplainRequest(method, target=t, **request) for t in targets[i : i + 16]]
        out += [e.heatmap for e in explainer.explain(x[i : i + 16], reqs).explanations]
    return np.stack(out)


def flowers(n: int, seed: int = 100):
    picked = generate(n, seed, labels=balanced_labels(n))
    x = torch.stack([torch.from_numpy(f.image).permute(2, 0, 1).float() / 255 for f in picked])
    return picked, x, [f.label for f in picked]


def pointing(n: int) -> list[str]:
    picked, x, labels = flowers(n)
    cnn, bcos = load_model("flowers_cnn"), load_model("flowers_bcos")
    maps = {
        "flowers_cnn / fgvis deletion": fgvis(cnn, x, labels)[0],
        "flowers_cnn / fgvis preservation": fgvis(cnn, x, labels, game="preservation")[0],
        "flowers_cnn / fgvis deletion, no defense": fgvis(cnn, x, labels, defense=False)[0],
        "flowers_cnn / gradcam": cams(cnn, x, labels, "gradcam"),
        "flowers_cnn / scorecam": cams(cnn, x, labels, "scorecam"),
        "flowers_bcos / bcos": cams(bcos, x, labels, "bcos"),
    }
    rows = ["| model / method | energy PG ↑ | n |", "|---|---:|---:|"]
    for name, m in maps.items():
        scores = [metrics.energy_pointing_game(m[i], f.evidence_mask) for i, f in enumerate(picked)]
        rows.append(f"| {name} | {np.mean(scores):.3f} | {len(scores)} |")
    return rows


def defense(n: int, n_present: int) -> list[str]:
    _, x, labels = flowers(n, seed=200)
    cnn = load_model("flowers_cnn")
    absent = [label ^ 7 for label in labels]
    rows = ["| preservation target | defense | share with p(e) > 0.5 | mean p(e) | n |", "|---|---|---:|---:|---:|"]
    for name, count, targets in (("absent class (label ^ 7)", n, absent), ("present class", n_present, labels)):
        for on in (True, False):
            _, p = fgvis(cnn, x[:count], targets[:count], game="preservation", defense=on)
            rows.append(f"| {name} | {'on' if on else 'off'} | {np.mean(p > 0.5):.3f} | {p.mean():.3f} | {len(p)} |")
    return rows


def patch_mask(flower) -> np.ndarray | None:
    """The 24 x 24 corner square that touches no flower pixel (None if every corner does)."""
    size = flower.image.shape[0]
    for r, c in ((0, 0), (0, size - PATCH), (size - PATCH, 0), (size - PATCH, size - PATCH)):
        mask = np.zeros((size, size), dtype=bool)
        mask[r : r + PATCH, c : c + PATCH] = True
        if not (mask & flower.flower_mask).any():
            return mask
    return None


def pgd(model, x, target, mask) -> torch.Tensor:
    """Targeted PGD, L_inf <= EPS, only inside ``mask``; pixels stay in [0, 1]."""
    region = torch.from_numpy(mask).float()
    delta = torch.zeros_like(x)
    for _ in range(PGD_STEPS):
        delta.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model((x + delta)[None]), torch.tensor([target]))
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta = (delta - EPS / 10 * grad.sign() * region).clamp(-EPS, EPS)
            delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()


def adversarial(n: int) -> list[str]:
    picked, x, labels = flowers(n, seed=300)
    cnn = load_model("flowers_cnn")
    for p in cnn.module.parameters():
        p.requires_grad_(False)
    kept, images, targets, masks = [], [], [], []
    for f, image, label in zip(picked, x, labels):
        mask = patch_mask(f)
        if mask is None:
            continue
        adv = pgd(cnn.module, image, label ^ 7, mask)
        with torch.no_grad():
            if int(cnn.module(adv[None]).argmax()) == label ^ 7:
                kept.append(f), images.append(adv), targets.append(label ^ 7), masks.append(mask)
    for p in cnn.module.parameters():
        p.requires_grad_(True)
    tried = sum(patch_mask(f) is not None for f in picked)
    rows = [
        f"PGD: eps {EPS} (pixels in [0, 1]), {PGD_STEPS} steps, {PATCH}x{PATCH} patch; "
        f"{len(kept)} of {tried} attacks reached the target ({n - tried} flowers had no free corner)",
        "",
        "| map of the adversarial class | energy on patch | energy on class parts | n |",
        "|---|---:|---:|---:|",
    ]
    if not kept:
        return rows
    adv = torch.stack(images)
    maps = {
        "fgvis deletion, defense": fgvis(cnn, adv, targets)[0],
        "fgvis deletion, no defense": fgvis(cnn, adv, targets, defense=False)[0],
        "fgvis preservation, defense": fgvis(cnn, adv, targets, game="preservation")[0],
        "fgvis preservation, no defense": fgvis(cnn, adv, targets, game="preservation", defense=False)[0],
        "gradcam": cams(cnn, adv, targets, "gradcam"),
    }
    for name, m in maps.items():
        on_patch = [metrics.energy_pointing_game(m[i], masks[i]) for i in range(len(kept))]
        on_object = [metrics.energy_pointing_game(m[i], f.evidence_mask) for i, f in enumerate(kept)]
        rows.append(f"| {name} | {np.mean(on_patch):.3f} | {np.mean(on_object):.3f} | {len(kept)} |")
    return rows


def photos() -> list[str]:
    spec = load_model("efficientnet_lite0")
    x = torch.stack([spec.preprocess(Image.open(photo_path(p))) for p in available_photos()])
    with torch.inference_mode():
        targets = spec.module(x).argmax(1).tolist()

    def predict(batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return torch.softmax(spec.module(batch), 1)

    maps = {
        "fgvis deletion (default options)": fgvis(spec, x, targets)[0],
        "gradcam": cams(spec, x, targets, "gradcam"),
        "scorecam (64 channels)": cams(spec, x, targets, "scorecam", channels=64),
    }
    rows = ["| efficientnet_lite0, bundled photos | deletion AUC ↓ | insertion AUC ↑ | n |", "|---|---:|---:|---:|"]
    for name, m in maps.items():
        d = [metrics.deletion_auc(predict, x[i], m[i], targets[i]) for i in range(len(x))]
        ins = [metrics.insertion_auc(predict, x[i], m[i], targets[i]) for i in range(len(x))]
        rows.append(f"| {name} | {np.mean(d):.3f} | {np.mean(ins):.3f} | {len(x)} |")
    return rows


def randomisation(n: int) -> list[str]:
    _, x, labels = flowers(n, seed=400)
    spec = load_model("flowers_cnn")
    steps = ["fc", "blocks.3", "blocks.2", "blocks.1", "blocks.0"]
    base = {"fgvis": fgvis(spec, x, labels)[0], "gradcam": cams(spec, x, labels, "gradcam")}
    model = copy.deepcopy(spec.module)
    torch.manual_seed(0)
    rows = ["| randomised down to | fgvis Spearman | gradcam Spearman | n |", "|---|---:|---:|---:|"]
    for step in steps:
        for module in dict(model.named_modules())[step].modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                module.reset_parameters()  # weights re-drawn; batch norms kept
        randomised = dataclasses.replace(spec, module=model)
        now = {"fgvis": fgvis(randomised, x, labels)[0], "gradcam": cams(randomised, x, labels, "gradcam")}
        rho = {k: np.nanmean([spearmanr(base[k][i].ravel(), now[k][i].ravel())[0] for i in range(n)]) for k in base}
        rows.append(f"| {step} | {rho['fgvis']:.3f} | {rho['gradcam']:.3f} | {n} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--n-defense", type=int, default=64)
    parser.add_argument("--n-present", type=int, default=16)
    parser.add_argument("--n-adv", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="*", default=["pointing", "defense", "adversarial", "photos", "randomisation"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    claims = {
        "pointing": lambda: pointing(args.n),
        "defense": lambda: defense(args.n_defense, args.n_present),
        "adversarial": lambda: adversarial(args.n_adv),
        "photos": photos,
        "randomisation": lambda: randomisation(args.n // 2),
    }
    for name in args.only:
        print("\n".join(claims[name]()) + "\n", flush=True)


if __name__ == "__main__":
    main()
