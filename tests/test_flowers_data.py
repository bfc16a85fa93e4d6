import numpy as np
import pytest

from whyserve.data.flowers import (
    CLASS_NAMES,
    COLOURS,
    JITTER,
    NOISE,
    PARTS,
    class_bits,
    differing_part,
    generate,
    make_flower,
    make_grid,
    one_part_contrasts,
)


@pytest.fixture(scope="module")
def flowers():
    return generate(48, seed=7)


def test_generator_is_deterministic_and_independent_of_n(flowers):
    again = generate(10, seed=7)
    for a, b in zip(flowers[:10], again):
        assert np.array_equal(a.image, b.image) and a.label == b.label
        assert all(np.array_equal(a.masks[p], b.masks[p]) for p in PARTS)
    other = generate(10, seed=8)
    assert not np.array_equal(flowers[0].image, other[0].image)


def test_images_have_the_documented_form(flowers):
    for f in flowers:
        assert f.image.shape == (96, 96, 3) and f.image.dtype == np.uint8
        assert set(f.masks) == set(PARTS)
        assert all(f.masks[p].shape == (96, 96) and f.masks[p].dtype == bool for p in PARTS)
    assert {f.label for f in flowers} == set(range(8))


def test_masks_are_disjoint_and_every_part_is_visible(flowers):
    for f in flowers:
        stack = np.stack([f.masks[p] for p in PARTS])
        assert stack.sum(0).max() == 1  # one part per pixel at most
        for part in ("petals", "centre", "leaves"):  # the stem may hide behind the leaves
            assert f.masks[part].sum() >= 15, (part, f.masks[part].sum())
        assert 0.05 < f.flower_mask.mean() < 0.5


def test_pixels_inside_each_mask_have_that_parts_colour(flowers):
    for f in flowers:
        for part in PARTS:
            pixels = f.image[f.masks[part]].astype(int)
            assert np.abs(pixels - np.array(f.colours[part])).max() <= NOISE, part


def test_class_colours_define_the_class(flowers):
    for f in flowers:
        bits = class_bits(f.label)
        for part in ("petals", "centre", "leaves"):
            reference = np.array(COLOURS[part][bits[part]][1])
            wrong = np.array(COLOURS[part][1 - bits[part]][1])
            assert np.abs(np.array(f.colours[part]) - reference).max() <= JITTER
            assert np.abs(np.array(f.colours[part]) - wrong).max() > 3 * JITTER


def test_class_is_not_in_the_background_or_stem():
    # the same (seed, index) with another label gives the same background and stem pixels
    a, b = make_flower(3, 5, label=0), make_flower(3, 5, label=7)
    same = ~(a.evidence_mask | b.evidence_mask)
    assert np.array_equal(a.image[same], b.image[same])
    assert np.array_equal(a.masks["stem"], b.masks["stem"])


def test_one_part_contrasts_and_their_masks():
    assert CLASS_NAMES[0] == "red petals, yellow centre, green leaves"
    assert CLASS_NAMES[7] == "blue petals, purple centre, orange leaves"
    assert differing_part(0, 4) == "petals" and differing_part(0, 2) == "centre" and differing_part(0, 1) == "leaves"
    assert differing_part(0, 3) is None
    assert sorted(differing_part(5, q) for q in one_part_contrasts(5)) == ["centre", "leaves", "petals"]
    f = make_flower(1, 2, label=5)
    assert np.array_equal(f.contrast_mask(1), f.masks["petals"])
    with pytest.raises(ValueError):
        f.contrast_mask(2)


def test_grid_has_four_distinct_classes_in_its_cells():
    grid = make_grid(0, 3)
    assert grid.image.shape == (192, 192, 3) and len(set(grid.labels)) == 4
    cell = make_flower(0, 4 * 3 + 1, grid.labels[1])
    assert np.array_equal(grid.image[:96, 96:], cell.image)
    assert grid.cell_mask(3).sum() == 96 * 96 and grid.cell_mask(3)[150, 150]


def test_fair_grid_puts_the_complement_class_in_every_other_cell():
    from whyserve.data.flowers import class_bits, make_fair_grid

    cells = set()
    for index in range(16):
        grid, cell = make_fair_grid(5, index)
        target = grid.labels[cell]
        assert target == index % 8 and grid.image.shape == (192, 192, 3)
        for k, label in enumerate(grid.labels):
            if k != cell:  # no class-defining part colour in common with the target
                assert all(class_bits(label)[p] != class_bits(target)[p] for p in ("petals", "centre", "leaves"))
        cells.add(cell)
    assert cells == {0, 1, 2, 3}


def test_single_part_flowers_have_exactly_one_class_coloured_part():
    from whyserve.data.flowers import (
        CLASS_PARTS,
        COLOURS,
        JITTER,
        NEUTRAL,
        SINGLE_CLASSES,
        generate_single_part,
        make_single_part_flower,
    )

    flowers = generate_single_part(24, seed=31)
    assert {f.label for f in flowers} == set(range(6))
    for f in flowers:
        part, k = SINGLE_CLASSES[f.label]
        assert f.evidence_parts == (part,) and np.array_equal(f.evidence_mask, f.masks[part])
        assert np.abs(np.subtract(f.colours[part], COLOURS[part][k][1])).max() <= JITTER
        for other in set(CLASS_PARTS) - {part}:  # every other class part is neutral
            assert min(np.abs(np.subtract(f.colours[other], c)).max() for _, c in NEUTRAL) <= JITTER
    again = make_single_part_flower(31, 5)
    assert np.array_equal(again.image, flowers[5].image) and again.label == flowers[5].label
