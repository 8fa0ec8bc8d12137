"""Backgrounds that carry (or do not carry) the label, and counterfactual test sets to measure it.

Modelled on the ImageNet-9 backgrounds challenge (Xiao et al. 2020, "Noise or Signal: The Role
of Image Backgrounds in Object Recognition"), on the scenes of :mod:`lastvit.data.scenes`:

* **Background groups.** The backgrounds of each split are cut into ``num_groups`` groups of
  (near) equal size by the rank of their mean luminance (0.299 R + 0.587 G + 0.114 B over the whole
  file, darkest group 0), so every split has every group and a held-out background of group g
  looks like the training backgrounds of group g. Class c belongs to group ``c % num_groups``.
* **The dial** ``correlation`` (rho): with probability rho a scene's background is redrawn from
  its class's group; otherwise it keeps the uniformly drawn one. So P(background in the class's
  group) = rho + (1 - rho) / num_groups; rho = 0 draws exactly the scenes of
  :class:`~lastvit.data.scenes.SceneGenerator` (no extra random draws).
* **Counterfactual sets.** Every scene is rendered five ways with the same object instance, size,
  flip and position: ``original`` (as drawn, with rho), ``only_fg`` (the object on a black
  canvas, as IN-9's Only-FG), ``only_bg`` (the background layer as drawn, before the object is
  pasted: the object's region shows the background that was under it, so no object pixel
  remains), ``mixed_same`` (a background drawn uniformly from the class's own group) and
  ``mixed_rand`` (a background drawn from a uniformly chosen *other* group). The replacement
  backgrounds come from a separate random stream, so the object layer is identical in all five.
* **Validation split.** :func:`carve_validation` holds out a share of the training object
  instances (per class) and of the training backgrounds (per source) for tuning, so no choice
  (data scale, recipe, rho) ever looks at the test split.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np

from .scene_sources import SceneSources, _held_out
from .scenes import DEFAULT_SCALE_RANGE, Scene, SceneGenerator, _png, _progress, append_scene, scene_features

COUNTERFACTUAL_SETS = ("only_fg", "only_bg", "mixed_same", "mixed_rand")
"""The renderings besides ``original``; each is stored in the column ``image_<name>``."""
ALL_SETS = ("original", *COUNTERFACTUAL_SETS)
SPLIT_STREAMS = {"train": 0, "test": 1, "validation": 2}  # the random stream of each split (scenes uses 0 and 1)
ONLY_FG_VALUE = 0.0  # the canvas of only_fg: black, as IN-9's Only-FG


def background_groups(backgrounds: Sequence, num_groups: int) -> np.ndarray:
    """Group of every background ``[len(backgrounds)]``: the rank of its mean luminance cut into
    `num_groups` groups of near-equal size (0 = darkest). Needs at least `num_groups` backgrounds."""
    if num_groups < 1:
        raise ValueError(f"num_groups must be >= 1, got {num_groups}.")
    if len(backgrounds) < num_groups:
        raise ValueError(
            f"{len(backgrounds)} backgrounds cannot fill {num_groups} background groups; lower the number of groups."
        )
    weights = np.array([0.299, 0.587, 0.114])
    luminance = np.array(
        [(np.asarray(b.image.convert("RGB"), dtype=np.float64) @ weights).mean() for b in backgrounds]
    )
    order = np.argsort(luminance, kind="stable")
    groups = np.empty(len(backgrounds), dtype=np.int64)
    groups[order] = np.arange(len(backgrounds)) * num_groups // len(backgrounds)
    return groups


def class_group(label: int, num_groups: int) -> int:
    """The background group tied to class `label`."""
    return int(label) % num_groups


class ChallengeGenerator(SceneGenerator):
    """A :class:`SceneGenerator` whose backgrounds follow the class with probability `correlation`,
    and which renders each scene's counterfactual sets (see the module docstring)."""

    def __init__(
        self,
        sources: SceneSources,
        image_size: int = 64,
        clutter: int = 0,
        scale_range: tuple[float, float] = DEFAULT_SCALE_RANGE,
        correlation: float = 0.0,
        num_groups: int = 5,
    ):
        if not 0.0 <= correlation <= 1.0:
            raise ValueError(f"background_correlation must be in [0, 1], got {correlation}.")
        super().__init__(sources, image_size, clutter, scale_range)
        self.correlation, self.num_groups = correlation, num_groups
        self.groups = background_groups(sources.backgrounds, num_groups)
        self._members = [np.flatnonzero(self.groups == g) for g in range(num_groups)]
        self._mode, self._swap_rng, self._layer = "original", None, None

    def _scene_background(self, label, canvas, background_id, rng):
        if self.correlation > 0 and rng.random() < self.correlation:
            members = self._members[class_group(label, self.num_groups)]
            canvas, background_id = self._background_at(int(members[rng.integers(len(members))]), rng)
        self._layer = canvas.copy()  # the background layer as drawn: only_bg
        if self._mode == "only_fg":
            return np.full_like(canvas, ONLY_FG_VALUE), "none"
        if self._mode in ("mixed_same", "mixed_rand"):
            own = class_group(label, self.num_groups)
            if self._mode == "mixed_same" or self.num_groups == 1:
                group = own
            else:
                others = [g for g in range(self.num_groups) if g != own]
                group = others[int(self._swap_rng.integers(len(others)))]
            members = self._members[group]
            return self._background_at(int(members[self._swap_rng.integers(len(members))]), self._swap_rng)
        return canvas, background_id

    def counterfactual_scene(self, rng: np.random.Generator, swap_rng: np.random.Generator) -> dict:
        """The next scene of `rng` in every rendering of :data:`ALL_SETS` (``{name: uint8 image}``),
        plus its ``mask``, ``bbox``, ``label``, ``object_id`` and ``background_id`` (the original's).
        `rng` advances exactly as for one :meth:`scene`; the swapped backgrounds use `swap_rng`."""
        start = copy.deepcopy(rng.bit_generator.state)
        self._mode = "original"
        original = self.scene(rng)
        end = copy.deepcopy(rng.bit_generator.state)
        images = {"original": original.image, "only_bg": np.clip(self._layer + 0.5, 0, 255).astype(np.uint8)}
        self._swap_rng = swap_rng
        try:
            for mode in ("only_fg", "mixed_same", "mixed_rand"):
                rng.bit_generator.state = copy.deepcopy(start)
                self._mode = mode
                images[mode] = self.scene(rng).image
        finally:
            self._mode, self._swap_rng = "original", None
            rng.bit_generator.state = end
        return {
            **images,
            "mask": original.mask,
            "bbox": original.bbox,
            "label": original.label,
            "object_id": original.object_id,
            "background_id": original.background_id,
        }


def carve_validation(sources: SceneSources, seed: int, fraction: float = 0.25) -> tuple[SceneSources, SceneSources]:
    """Split training sources into ``(train, validation)``: `fraction` of every class's object
    instances and of every background source (at least one each) go to validation."""
    if not 0 < fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {fraction}.")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 11]))
    held_objects = []
    for label in range(len(sources.class_names)):
        members = np.flatnonzero(sources.objects.labels == label)
        held_objects += members[_held_out(len(members), fraction, rng)].tolist()
    groups: dict[str, list[int]] = {}
    for index, background in enumerate(sources.backgrounds):
        groups.setdefault(background.group, []).append(index)
    held_backgrounds = set()
    for _, members in sorted(groups.items()):
        held_backgrounds.update(members[i] for i in _held_out(len(members), fraction, rng))
    held = set(held_objects)
    kept_objects = sources.objects.subset([i for i in range(len(sources.objects)) if i not in held])
    held_out_objects = sources.objects.subset(sorted(held))
    train_bg = [b for i, b in enumerate(sources.backgrounds) if i not in held_backgrounds]
    val_bg = [b for i, b in enumerate(sources.backgrounds) if i in held_backgrounds]
    train = SceneSources(
        sources.class_names, kept_objects, train_bg, sources.opacity, f"{sources.description}; validation carved out"
    )
    validation = SceneSources(
        sources.class_names,
        held_out_objects,
        val_bg,
        sources.opacity,
        f"{sources.description}; validation: {fraction:.0%} of the training instances and backgrounds",
    )
    return train, validation


def render_split(
    sources: SceneSources,
    num: int,
    split: str,
    *,
    seed: int = 0,
    image_size: int = 32,
    clutter: int = 0,
    scale_range: tuple[float, float] = DEFAULT_SCALE_RANGE,
    correlation: float = 0.0,
    num_groups: int = 5,
    counterfactual: bool = False,
    progress: bool = False,
):
    """One split as a ``datasets.Dataset`` with the scenes columns; with `counterfactual` also the
    columns ``image_<set>`` of :data:`COUNTERFACTUAL_SETS` (``image`` is the original)."""
    import datasets

    generator = ChallengeGenerator(sources, image_size, clutter, scale_range, correlation, num_groups)
    stream = SPLIT_STREAMS[split]
    rng = np.random.default_rng(np.random.SeedSequence([seed, 2, stream]))
    swap_rng = np.random.default_rng(np.random.SeedSequence([seed, 7, stream]))
    features = scene_features(sources.class_names)
    if counterfactual:
        features = datasets.Features(
            {**features, **{f"image_{name}": datasets.Image() for name in COUNTERFACTUAL_SETS}}
        )
    columns = {name: [] for name in features}
    for _ in _progress(range(num), num, f"{split} scenes", progress):
        if counterfactual:
            rendered = generator.counterfactual_scene(rng, swap_rng)
            for name in COUNTERFACTUAL_SETS:
                columns[f"image_{name}"].append(_png(rendered[name]))
            fields = ("mask", "bbox", "label", "object_id", "background_id")
            scene = Scene(rendered["original"], *(rendered[name] for name in fields))
        else:
            scene = generator.scene(rng)
        append_scene(columns, scene)
    description = (
        f"LaSt-ViT background challenge, {split} split ({sources.description}): {len(sources.objects)} object "
        f"instances and {len(sources.backgrounds)} backgrounds in {num_groups} luminance groups; background "
        f"correlation {correlation}."
    )
    info = datasets.DatasetInfo(description=description, features=features)
    return datasets.Dataset.from_dict(columns, features=features, info=info, split=split)


def build_challenge(
    num_train: int,
    num_validation: int,
    num_test: int,
    *,
    variant: str = "fashion",
    image_size: int = 32,
    seed: int = 0,
    clutter: int = 0,
    scale_range: tuple[float, float] = DEFAULT_SCALE_RANGE,
    opacity: float | None = None,
    correlation: float = 0.0,
    num_groups: int = 5,
    validation_fraction: float = 0.25,
    progress: bool = False,
):
    """The study's data as a ``datasets.DatasetDict``: ``train`` (from the training sources less the
    validation carve), ``validation`` (held-out training instances and backgrounds) and ``test``
    (the held-out test split of :func:`~lastvit.data.scenes.scene_splits`), the latter two with
    their counterfactual columns. Backgrounds follow the class with probability `correlation`
    in all three."""
    import datasets

    from .scene_sources import scene_splits

    splits = scene_splits(variant, seed)
    train, validation = carve_validation(splits["train"], seed, validation_fraction)
    sources = {"train": train, "validation": validation, "test": splits["test"]}
    counts = {"train": num_train, "validation": num_validation, "test": num_test}
    result = {}
    for split in ("train", "validation", "test"):
        if opacity is not None:
            sources[split].opacity = opacity
        result[split] = render_split(
            sources[split],
            counts[split],
            split,
            seed=seed,
            image_size=image_size,
            clutter=clutter,
            scale_range=scale_range,
            correlation=correlation,
            num_groups=num_groups,
            counterfactual=split != "train",
            progress=progress,
        )
    return datasets.DatasetDict(result)


__all__ = [
    "ALL_SETS",
    "COUNTERFACTUAL_SETS",
    "ChallengeGenerator",
    "background_groups",
    "build_challenge",
    "carve_validation",
    "class_group",
    "render_split",
]
