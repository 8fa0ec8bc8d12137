"""The offline scenes benchmark: deterministic, held-out test split, exact boxes and masks, small
objects, clear errors, datasets integration and the `lastvit-scenes` command line.

Tests marked by the `debian` fixture use the Debian image files and fail (not skip) with the
install command when they are missing; the others build tiny cut-outs and backgrounds in tmp_path.
"""

import gzip
import struct

import datasets
import numpy as np
import pytest
from PIL import Image, ImageDraw

from lastvit.data import scene_sources, scenes
from training_scripts import scenes as scenes_cli

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
GREY = 128


@pytest.fixture(scope="module")
def debian():
    """Fail with the one command that installs the Debian files when they are missing."""
    paths = [scenes.TUXPAINT_STAMPS, scenes.TUXPAINT_TEMPLATES, scenes.MATE_NATURE, scenes.GIMP_PATTERNS]
    paths += [scenes.FASHION_MNIST / "train-images-idx3-ubyte.gz", scenes.FASHION_MNIST / "t10k-images-idx3-ubyte.gz"]
    missing = [p for p in paths if not p.exists()]
    if missing:
        pytest.fail(scenes.missing_debian_files_message(missing), pytrace=False)


@pytest.fixture(scope="module")
def user_sources(tmp_path_factory):
    """Three classes of solid-colour cut-outs (ellipses, three per class) and four uniform grey backgrounds."""
    root = tmp_path_factory.mktemp("user_sources")
    for name, colour in COLOURS.items():
        (root / "objects" / name).mkdir(parents=True)
        for i, (w, h) in enumerate([(40, 30), (24, 48), (36, 36)]):
            image = Image.new("RGBA", (w + 10, h + 10), (0, 0, 0, 0))
            ImageDraw.Draw(image).ellipse((5, 5, 5 + w - 1, 5 + h - 1), fill=(*colour, 255))
            image.save(root / "objects" / name / f"{name}{i}.png")
    (root / "backgrounds").mkdir()
    for i in range(4):
        Image.new("RGB", (80 + 10 * i, 70), (GREY, GREY, GREY)).save(root / "backgrounds" / f"grey{i}.png")
    return root / "objects", root / "backgrounds"


def as_arrays(dataset):
    images = np.stack([np.asarray(im) for im in dataset["image"]])
    masks = np.stack([np.asarray(m) for m in dataset["mask"]]) > 0
    return images, masks, np.asarray(dataset["bbox"], dtype=np.float32), np.asarray(dataset["label"])


def test_install_command_names_every_debian_package():
    assert scenes.INSTALL_COMMAND == (
        "apt-get update && apt-get install -y --no-install-recommends "
        "tuxpaint-stamps-default tuxpaint-data mate-backgrounds gimp-data dataset-fashion-mnist"
    )


def test_every_public_name_of_the_sources_is_importable_from_scenes():
    defined_there = {
        n for n, v in vars(scene_sources).items() if getattr(v, "__module__", "") == scene_sources.__name__
    }
    public = [n for n in vars(scene_sources) if not n.startswith("_") and (n.isupper() or n in defined_there)]
    assert {"read_idx", "read_gimp_pattern", "scene_splits", "ScenesSourceError", "SCENE_CLASSES"} <= set(public)
    assert [name for name in public if getattr(scenes, name, None) is not getattr(scene_sources, name)] == []


# ---------------------------------------------------------------- Debian sources


def test_debian_sources_give_seven_classes_of_cutouts_and_three_background_sources(debian):
    splits = scenes.scene_splits()
    counts = {
        name: splits["train"].instances_per_class()[name] + splits["test"].instances_per_class()[name]
        for name in scenes.SCENE_CLASSES
    }
    assert all(count >= 15 for count in counts.values()), counts
    assert sum(counts.values()) >= 280
    groups = {b.group for split in splits.values() for b in split.backgrounds}
    assert groups == {"tuxpaint", "mate", "gimp"}


def test_same_seed_gives_identical_scenes_and_another_seed_does_not(debian):
    first = scenes.build_scenes(24, 12, seed=3, clutter=2)
    again = scenes.build_scenes(24, 12, seed=3, clutter=2)
    other = scenes.build_scenes(24, 12, seed=4, clutter=2)
    for split in ("train", "test"):
        a, b, c = (d[split].with_format("arrow")[:] for d in (first, again, other))
        assert a.equals(b)
        assert not a.equals(c)


def test_the_first_scenes_do_not_depend_on_how_many_are_drawn(debian):
    short = scenes.generate_scenes(5, "test", seed=1)
    longer = scenes.generate_scenes(12, "test", seed=1)
    np.testing.assert_array_equal(short.images, longer.images[:5])
    assert short.object_ids == longer.object_ids[:5]


def test_test_split_holds_out_a_quarter_of_instances_per_class_and_some_backgrounds(debian):
    splits = scenes.scene_splits(seed=0)
    train, test = splits["train"], splits["test"]
    assert not set(train.objects.names) & set(test.objects.names)
    assert not {b.name for b in train.backgrounds} & {b.name for b in test.backgrounds}
    for name in scenes.SCENE_CLASSES:
        n_train, n_test = train.instances_per_class()[name], test.instances_per_class()[name]
        assert 0.15 <= n_test / (n_train + n_test) <= 0.35, (name, n_train, n_test)
    assert {b.group for b in test.backgrounds} == {"tuxpaint", "mate", "gimp"}  # some of every source
    assert set(scenes.scene_splits(seed=1)["test"].objects.names) != set(test.objects.names)


def test_generated_splits_use_only_their_own_instances_and_backgrounds(debian):
    data = scenes.build_scenes(150, 150, seed=0, clutter=1)
    splits = scenes.scene_splits(seed=0)
    for split in ("train", "test"):
        assert set(data[split]["object_id"]) <= set(splits[split].objects.names)
        assert set(data[split]["background_id"]) <= {b.name for b in splits[split].backgrounds}
    assert not set(data["train"]["object_id"]) & set(data["test"]["object_id"])
    assert not set(data["train"]["background_id"]) & set(data["test"]["background_id"])


def test_boxes_are_the_bounding_boxes_of_the_alpha_masks(debian):
    for clutter in (0, 3):
        data = scenes.generate_scenes(200, "train", seed=5, clutter=clutter)
        for mask, box in zip(data.masks, data.bboxes):
            assert mask.any()
            np.testing.assert_array_equal(scenes.mask_to_box(mask), box)
            x, y, w, h = box.astype(int)
            assert mask[y, x : x + w].any() and mask[y + h - 1, x : x + w].any()  # tight: edges touch the mask
            assert mask[y : y + h, x].any() and mask[y : y + h, x + w - 1].any()


def test_objects_are_at_most_45_percent_of_the_image_side(debian):
    for size in (64, 96):
        data = scenes.generate_scenes(200, "train", seed=2, image_size=size, clutter=2)
        sides = data.bboxes[:, 2:].max(axis=1)
        assert sides.max() <= 0.45 * size
        assert sides.min() >= 2
        centres = data.bboxes[:, :2] + data.bboxes[:, 2:] / 2
        assert centres.min() < 0.25 * size and centres.max() > 0.75 * size  # placed all over the image


def test_dataset_has_hub_style_features(debian):
    data = scenes.build_scenes(8, 4, seed=0)
    assert isinstance(data, datasets.DatasetDict) and set(data) == {"train", "test"}
    assert (data["train"].num_rows, data["test"].num_rows) == (8, 4)
    features = data["train"].features
    assert features["label"].names == list(scenes.SCENE_CLASSES)
    assert features["bbox"] == datasets.List(datasets.Value("float32"), length=4)
    assert isinstance(features["image"], datasets.Image) and isinstance(features["mask"], datasets.Image)
    row = data["train"][0]
    assert row["image"].mode == "RGB" and row["image"].size == (64, 64)
    assert row["mask"].mode == "L" and set(np.unique(np.asarray(row["mask"]))) <= {0, 255}
    assert '"seed": 0' in data["train"].info.description


def test_fashion_mnist_variant_uses_train_items_for_train_and_t10k_items_for_test(debian):
    data = scenes.build_fashion_mnist_scenes(120, 60, seed=0)
    assert data["train"].features["label"].names == list(scenes.FASHION_MNIST_CLASSES)
    assert all(i.startswith("fashion-mnist/train/") for i in data["train"]["object_id"])
    assert all(i.startswith("fashion-mnist/test/") for i in data["test"]["object_id"])
    assert not set(data["train"]["background_id"]) & set(data["test"]["background_id"])
    images, masks, boxes, labels = as_arrays(data["train"])
    assert images.shape == (120, 48, 48, 3)
    assert boxes[:, 2:].max() <= 0.45 * 48
    for mask, box in zip(masks, boxes):
        np.testing.assert_array_equal(scenes.mask_to_box(mask), box)
    assert len(set(labels.tolist())) >= 8


def test_fashion_mnist_items_are_pasted_at_half_opacity(debian, user_sources):
    data = scenes.generate_scenes(50, variant="fashion", seed=0, backgrounds_dir=user_sources[1])
    inside = data.images[data.masks]
    assert (data.images[~data.masks] == GREY).all()
    assert (inside == inside[:, :1]).all()  # grey items on a grey background stay grey
    # half opacity: (background + item) / 2, so black item pixels give 64 and white ones 192, not 0 and 255
    assert inside.min() >= GREY // 2 and inside.max() <= (GREY + 255) // 2 + 1
    assert inside.min() < 100 and inside.max() > 150


def test_opacity_override_pastes_fashion_items_opaquely_with_the_same_boxes(debian, user_sources):
    half = scenes.generate_scenes(30, variant="fashion", seed=0, backgrounds_dir=user_sources[1])
    full = scenes.generate_scenes(30, variant="fashion", seed=0, backgrounds_dir=user_sources[1], opacity=1.0)
    np.testing.assert_array_equal(half.masks, full.masks)
    inside = full.images[full.masks]
    assert inside.min() < GREY // 2 and inside.max() > (GREY + 255) // 2 + 1  # the item's own black and white
    np.testing.assert_array_equal(half.images[~half.masks], full.images[~full.masks])


# ---------------------------------------------------------------- errors


def test_missing_debian_files_error_says_the_install_command(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(scene_sources, "TUXPAINT_STAMPS", tmp_path / "no-stamps")
    with pytest.raises(scenes.ScenesSourceError) as error:
        scenes.build_scenes(4, 4)
    assert scenes.INSTALL_COMMAND in str(error.value) and "no-stamps" in str(error.value)

    assert scenes_cli.main(["--num-train", "4", "--num-test", "4", "--output", str(tmp_path / "out")]) == 2
    assert scenes.INSTALL_COMMAND in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_fashion_mnist_error_says_the_install_command(monkeypatch, tmp_path, user_sources):
    monkeypatch.setattr(scene_sources, "FASHION_MNIST", tmp_path / "no-fashion")
    with pytest.raises(scenes.ScenesSourceError, match="dataset-fashion-mnist") as error:
        scenes.build_fashion_mnist_scenes(4, 4, backgrounds_dir=user_sources[1])
    assert scenes.INSTALL_COMMAND in str(error.value)


def test_missing_background_files_error_says_the_install_command(monkeypatch, tmp_path, user_sources):
    monkeypatch.setattr(scene_sources, "MATE_NATURE", tmp_path / "no-mate")
    with pytest.raises(scenes.ScenesSourceError, match="no-mate") as error:
        scenes.build_scenes(4, 4, objects_dir=user_sources[0])
    assert scenes.INSTALL_COMMAND in str(error.value)


def test_user_objects_without_alpha_are_rejected(tmp_path, user_sources):
    objects = tmp_path / "objects"
    for name in ("cat", "dog"):
        (objects / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (20, 20), (200, 10, 10)).save(objects / name / f"{i}.png")
    with pytest.raises(scenes.ScenesSourceError, match="alpha channel"):
        scenes.build_scenes(4, 4, objects_dir=objects, backgrounds_dir=user_sources[1])


def test_user_classes_need_two_instances_and_backgrounds_two_images(tmp_path, user_sources):
    objects = tmp_path / "objects"
    for name, count in (("cat", 2), ("dog", 1)):
        (objects / name).mkdir(parents=True)
        for i in range(count):
            Image.new("RGBA", (20, 20), (200, 10, 10, 255)).save(objects / name / f"{i}.png")
    with pytest.raises(scenes.ScenesSourceError, match="class 'dog' has 1 image"):
        scenes.build_scenes(4, 4, objects_dir=objects, backgrounds_dir=user_sources[1])
    lonely = tmp_path / "one_background"
    lonely.mkdir()
    Image.new("RGB", (64, 64)).save(lonely / "only.png")
    with pytest.raises(scenes.ScenesSourceError, match="at least 2"):
        scenes.build_scenes(4, 4, objects_dir=user_sources[0], backgrounds_dir=lonely)
    with pytest.raises(scenes.ScenesSourceError, match="no such folder"):
        scenes.build_scenes(4, 4, objects_dir=tmp_path / "nowhere", backgrounds_dir=user_sources[1])


# ---------------------------------------------------------------- your own cut-outs (run anywhere)


def test_user_cutouts_give_one_class_per_subfolder_and_a_disjoint_split(user_sources):
    data = scenes.build_scenes(40, 20, seed=0, objects_dir=user_sources[0], backgrounds_dir=user_sources[1])
    assert data["train"].features["label"].names == sorted(COLOURS)
    train_objects, test_objects = set(data["train"]["object_id"]), set(data["test"]["object_id"])
    assert test_objects and not train_objects & test_objects
    assert len({name.split("/")[0] for name in test_objects}) == 3  # every class has a held-out instance
    assert not set(data["train"]["background_id"]) & set(data["test"]["background_id"])


def test_nothing_outside_the_mask_comes_from_the_object(user_sources):
    data = scenes.build_scenes(60, 0, seed=1, objects_dir=user_sources[0], backgrounds_dir=user_sources[1])
    images, masks, boxes, labels = as_arrays(data["train"])
    names = data["train"].features["label"].names
    for image, mask, box, label in zip(images, masks, boxes, labels):
        assert (image[~mask] == GREY).all()  # the grey background is untouched outside the mask
        channel = list(COLOURS).index(names[label])
        assert (image[mask].argmax(axis=1) == channel).all()  # inside, the object's colour dominates
        np.testing.assert_array_equal(scenes.mask_to_box(mask), box)


def test_clutter_adds_fragments_of_other_classes_under_the_object(user_sources):
    data = scenes.build_scenes(60, 0, seed=1, clutter=3, objects_dir=user_sources[0], backgrounds_dir=user_sources[1])
    images, masks, _, labels = as_arrays(data["train"])
    names = data["train"].features["label"].names
    with_fragments = 0
    for image, mask, label in zip(images, masks, labels):
        channel = list(COLOURS).index(names[label])
        outside = image[~mask]
        coloured = outside[(outside != GREY).any(axis=1)]
        with_fragments += len(coloured) > 0
        assert (coloured.argmax(axis=1) != channel).all()  # fragments come from the other classes
        assert (image[mask].argmax(axis=1) == channel).all()  # and never cover the object
    assert with_fragments >= 55


def test_save_to_disk_and_imagefolder_round_trip(user_sources, tmp_path):
    data = scenes.build_scenes(12, 6, seed=0, clutter=1, objects_dir=user_sources[0], backgrounds_dir=user_sources[1])
    data.save_to_disk(str(tmp_path / "saved"))
    reloaded = datasets.load_from_disk(str(tmp_path / "saved"))
    scenes.export_imagefolder(data, tmp_path / "folder")
    assert (tmp_path / "folder" / "train" / "metadata.jsonl").read_text().count("\n") == 12
    folder = scenes.load_imagefolder(tmp_path / "folder", cache_dir=str(tmp_path / "cache"))
    for other in (reloaded, folder):
        for split in ("train", "test"):
            assert other[split].features == data[split].features
            for column in ("label", "bbox", "object_id", "background_id"):
                assert other[split][column] == data[split][column]
            for a, b in zip(as_arrays(other[split])[:2], as_arrays(data[split])[:2]):
                np.testing.assert_array_equal(a, b)


def test_numpy_arrays_match_the_dataset(user_sources):
    kwargs = {"seed": 2, "clutter": 1, "objects_dir": user_sources[0], "backgrounds_dir": user_sources[1]}
    arrays = scenes.generate_scenes(10, "test", **kwargs)
    data = scenes.build_scenes(0, 10, **kwargs)
    images, masks, boxes, labels = as_arrays(data["test"])
    np.testing.assert_array_equal(arrays.images, images)
    np.testing.assert_array_equal(arrays.masks, masks)
    np.testing.assert_array_equal(arrays.bboxes, boxes)
    np.testing.assert_array_equal(arrays.labels, labels)


# ---------------------------------------------------------------- command line and readers


def test_cli_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_:
        scenes_cli.main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--num-train", "--num-test", "--image-size", "--seed", "--clutter", "--objects", "--backgrounds",
                 "--variant", "--output", "--imagefolder", "--overwrite", "--scale-range", "--opacity",
                 "apt-get install"):  # fmt: skip
        assert flag in text


def test_cli_writes_a_dataset_and_an_imagefolder_and_refuses_to_overwrite(user_sources, tmp_path, capsys):
    out, folder = tmp_path / "out", tmp_path / "folder"
    argv = ["--num-train", "6", "--num-test", "3", "--objects", str(user_sources[0]),
            "--backgrounds", str(user_sources[1]), "--output", str(out), "--imagefolder", str(folder)]  # fmt: skip
    assert scenes_cli.main(argv) == 0
    assert datasets.load_from_disk(str(out))["test"].num_rows == 3
    assert (folder / "README.md").exists() and (folder / "test" / "masks" / "000002.png").exists()
    with pytest.raises(SystemExit) as exit_:
        scenes_cli.main(argv)
    assert exit_.value.code == 2 and "--overwrite" in capsys.readouterr().err
    assert scenes_cli.main(argv + ["--overwrite", "--seed", "1"]) == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--num-train", "5"], "--output"),
        (["--output", "x", "--num-train", "-1"], ">= 0"),
        (["--output", "x", "--variant", "fashion", "--objects", "d"], "--objects applies"),
        (["--output", "x", "--background-sources", "tuxpaint,flickr"], "flickr"),
        (["--output", "x", "--test-fraction", "1.5"], "between 0 and 1"),
    ],
)
def test_cli_rejects_bad_arguments_with_a_clear_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        scenes_cli.main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_gimp_pattern_reader_parses_the_gpat_format(tmp_path):
    pixels = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    name = b"Test pattern\x00"
    header = struct.pack(">5I", 24 + len(name), 1, 3, 2, 3) + b"GPAT" + name
    (tmp_path / "rgb.pat").write_bytes(header + pixels.tobytes())
    np.testing.assert_array_equal(np.asarray(scenes.read_gimp_pattern(tmp_path / "rgb.pat")), pixels)
    grey = struct.pack(">5I", 24 + len(name), 1, 2, 1, 1) + b"GPAT" + name + bytes([7, 9])
    (tmp_path / "grey.pat").write_bytes(grey)
    np.testing.assert_array_equal(np.asarray(scenes.read_gimp_pattern(tmp_path / "grey.pat")), [[[7] * 3, [9] * 3]])
    (tmp_path / "bad.pat").write_bytes(b"\x00" * 40)
    with pytest.raises(ValueError, match="GPAT"):
        scenes.read_gimp_pattern(tmp_path / "bad.pat")


def test_idx_reader_parses_gzipped_images_and_labels(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    with gzip.open(tmp_path / "images.gz", "wb") as f:
        f.write(b"\x00\x00\x08\x03" + struct.pack(">3I", 2, 3, 4) + images.tobytes())
    (tmp_path / "labels").write_bytes(b"\x00\x00\x08\x01" + struct.pack(">I", 3) + bytes([1, 2, 9]))
    np.testing.assert_array_equal(scenes.read_idx(tmp_path / "images.gz"), images)
    np.testing.assert_array_equal(scenes.read_idx(tmp_path / "labels"), [1, 2, 9])
