"""The B-cos grid pointing game claim on the mixed and the fair grids (the grids `whyserve eval
--seed 100 --grids 6` uses), printed as a markdown table: mean [95 % bootstrap interval] n.

    .venv/bin/python benchmarks/grid_claims.py
"""

from whyserve import Explainer, load_model
from whyserve.data.flowers import make_fair_grid, make_grid
from whyserve.eval.report import grid_scores, interval_cell

MODELS = (("flowers_cnn", ("gradcam",)), ("flowers_bcos", ("bcos", "gradcam")))


def main(seed: int = 100, grids: int = 6) -> None:
    mixed = [(make_grid(seed + 1, g), c) for g in range(grids) for c in range(4)]
    fair = [make_fair_grid(seed + 2, g) for g in range(4 * grids)]
    print("| model / method | grid PG mixed | grid PG fair |\n|---|---|---|")
    for model, methods in MODELS:
        explainer = Explainer(load_model(model))
        for method in methods:
            cells = [interval_cell(grid_scores(explainer, method, grid), seed) for grid in (mixed, fair)]
            print(f"| {model} / {method} | {cells[0]} | {cells[1]} |", flush=True)


if __name__ == "__main__":
    main()
