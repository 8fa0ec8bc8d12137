"""The background challenge data: luminance groups, the correlation dial, counterfactual renderings
and the validation carve, on solid-colour cut-outs over uniform grey backgrounds."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from lastvit.data import background_challenge as B
from lastvit.data.scene_sources import scene_splits
from lastvit.data.scenes import SceneGenerator

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
GREYS = (20, 50, 90, 130, 170, 210, 235, 250)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Three classes of solid ellipses (four per class) and eight uniform greys, dark to light."""
    root = tmp_path_factory.mktemp("challenge_sources")
    for name, colour in COLOURS.items():
        (root / "objects" / name).mkdir(parents=True)
        for i, (w, h) in enumerate([(40, 30), (24, 48), (36, 36), (30, 40)]):
            image = Image.new("RGBA", (w + 10, h + 10), (0, 0, 0, 0))
            ImageDraw.Draw(image).ellipse((5, 5, 5 + w - 1, 5 + h - 1), fill=(*colour, 255))
            image.save(root / "objects" / name / f"{name}{i}.png")
    (root / "backgrounds").mkdir()
    for i, grey in enumerate(GREYS):
        Image.new("RGB", (80 + 5 * i, 70), (grey, grey, grey)).save(root / "backgrounds" / f"grey{grey:03d}.png")
    return scene_splits("scenes", 0, 0.25, root / "objects", root / "backgrounds")["train"]


def _grey(image: np.ndarray, mask: np.ndarray) -> int:
    outside = image[~mask]
    assert (outside == outside[0, 0]).all()  # a uniform grey background
    return int(outside[0, 0])


def test_background_groups_cut_the_luminance_ranking_into_equal_groups(sources):
    groups = B.background_groups(sources.backgrounds, 2)
    greys = [int(b.name.split("grey")[1][:3]) for b in sources.backgrounds]
    order = np.argsort(greys)
    assert groups[order].tolist() == sorted(groups.tolist())  # darker backgrounds, lower groups
    assert np.bincount(groups).tolist() in ([len(greys) // 2, len(greys) - len(greys) // 2],)
    with pytest.raises(ValueError, match="background groups"):
        B.background_groups(sources.backgrounds[:1], 2)


def test_zero_correlation_draws_exactly_the_plain_scenes(sources):
    plain, challenge = SceneGenerator(sources, 32), B.ChallengeGenerator(sources, 32, correlation=0.0, num_groups=2)
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    for _ in range(20):
        a, b = plain.scene(rng_a), challenge.scene(rng_b)
        np.testing.assert_array_equal(a.image, b.image)
        assert a.background_id == b.background_id


def test_full_correlation_puts_every_object_on_its_class_group(sources):
    generator = B.ChallengeGenerator(sources, 32, correlation=1.0, num_groups=2)
    group_of = {b.name: g for b, g in zip(sources.backgrounds, generator.groups)}
    rng = np.random.default_rng(0)
    for _ in range(40):
        scene = generator.scene(rng)
        assert group_of[scene.background_id] == B.class_group(scene.label, 2)
    with pytest.raises(ValueError, match="background_correlation"):
        B.ChallengeGenerator(sources, 32, correlation=1.5)


def test_counterfactual_renderings_keep_the_object_and_swap_only_the_background(sources):
    generator = B.ChallengeGenerator(sources, 32, scale_range=(0.6, 0.9), correlation=0.5, num_groups=2)
    greys_by_group = [
        {int(b.name.split("grey")[1][:3]) for b, g in zip(sources.backgrounds, generator.groups) if g == group}
        for group in range(2)
    ]
    rng, twin = np.random.default_rng(3), np.random.default_rng(3)
    swap = np.random.default_rng(9)
    for _ in range(20):
        scene = generator.counterfactual_scene(rng, swap)
        mask, own = scene["mask"], B.class_group(scene["label"], 2)
        np.testing.assert_array_equal(scene["original"], generator.scene(twin).image)  # same stream as scene()
        for name in ("only_fg", "mixed_same", "mixed_rand"):  # the same object; only its soft edge mixes
            same = (scene[name][mask] == scene["original"][mask]).all(axis=1)
            assert same.mean() > 0.5
            channel = list(COLOURS).index(sources.class_names[scene["label"]])
            assert (scene[name][mask].argmax(axis=1) == channel).all()
        assert (scene["only_fg"][~mask] == 0).all()
        assert _grey(scene["only_bg"], np.zeros_like(mask)) == _grey(scene["original"], mask)  # no object left
        assert _grey(scene["mixed_same"], mask) in greys_by_group[own]
        assert _grey(scene["mixed_rand"], mask) in greys_by_group[1 - own]


def test_validation_is_carved_from_the_training_instances_and_backgrounds(sources):
    train, validation = B.carve_validation(sources, seed=0, fraction=0.25)
    assert not set(train.objects.names) & set(validation.objects.names)
    assert set(train.objects.names) | set(validation.objects.names) == set(sources.objects.names)
    assert all(count >= 1 for count in validation.instances_per_class().values())
    assert not {b.name for b in train.backgrounds} & {b.name for b in validation.backgrounds}
    assert validation.backgrounds
    with pytest.raises(ValueError, match="validation_fraction"):
        B.carve_validation(sources, seed=0, fraction=1.0)


def test_rendered_splits_carry_the_counterfactual_columns(sources):
    split = B.render_split(sources, 6, "validation", image_size=32, num_groups=2, counterfactual=True)
    assert {f"image_{name}" for name in B.COUNTERFACTUAL_SETS} <= set(split.column_names)
    row = split[0]
    assert np.asarray(row["image_only_fg"]).shape == np.asarray(row["image"]).shape == (32, 32, 3)
    assert "image_only_fg" not in B.render_split(sources, 2, "train", image_size=32, num_groups=2).column_names
