"""DINO with a LastViT backbone: the loss and centre against hand computations, the exact EMA, the
schedules, multi-crop, the readout switch, an exact resume, and the exported teacher folder in a
fresh process where this package cannot be imported."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from lastvit.training.dino import (
    DINOHead,
    DINOLoss,
    DINOModel,
    MultiCrop,
    clip_gradients,
    default_local_size,
    dino_diagnostics,
    teacher_momentum,
    teacher_temperature,
    update_teacher,
)
from lastvit.training.dino_trainer import DINOTrainingArguments, build_backbone, load_head, train_dino
from lastvit.training.pretraining import PretrainingError
from modeling_lastvit import LastViTModel

from .test_saving_and_remote_code import run_isolated
from .tiny import tiny_config


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def test_dino_loss_matches_a_hand_computation():
    # one image, 2 global views (teacher and student) + 1 local view (student only), 3 prototypes
    student = torch.tensor([[0.1, 0.5, -0.2], [0.3, -0.1, 0.0], [1.0, 0.2, 0.4]])
    teacher = torch.tensor([[0.2, 0.0, 0.1], [-0.3, 0.4, 0.2]])
    loss_fn = DINOLoss(3, student_temp=0.1)
    loss_fn.center.copy_(torch.tensor([[0.05, -0.05, 0.0]]))
    center = np.array([0.05, -0.05, 0.0])
    q = [softmax((teacher[g].numpy() - center) / 0.04) for g in range(2)]
    log_p = [np.log(softmax(student[v].numpy() / 0.1)) for v in range(3)]
    pairs = [(0, 1), (0, 2), (1, 0), (1, 2)]  # (teacher view, student view), never the same view
    expected = np.mean([-(q[g] * log_p[v]).sum() for g, v in pairs])
    assert loss_fn(student, teacher, teacher_temp=0.04).item() == pytest.approx(expected, rel=1e-5)


def test_centre_is_an_ema_of_the_teacher_batch_means():
    loss_fn = DINOLoss(2, center_momentum=0.9)
    loss_fn.update_center(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    torch.testing.assert_close(loss_fn.center, torch.tensor([[0.2, 0.3]]))
    loss_fn.update_center(torch.tensor([[0.0, 0.0]]))
    torch.testing.assert_close(loss_fn.center, torch.tensor([[0.18, 0.27]]))
    assert "center" in loss_fn.state_dict()  # travels in checkpoints


def test_sharpening_and_centering_shape_the_teacher_targets():
    student = torch.tensor([[0.3, 0.1], [0.3, 0.1]])
    log_p0 = torch.log_softmax(student[0] / 0.1, dim=0)[0].item()
    # a cold teacher (0.04) turns logits [1, 0] into an almost one-hot target on prototype 0
    assert DINOLoss(2)(student, torch.tensor([[1.0, 0.0], [1.0, 0.0]]), 0.04).item() == pytest.approx(
        -log_p0, rel=1e-6
    )
    # centring removes the teacher's constant preference: logits [2, 0] minus centre [2, 0] is a uniform target
    centred = DINOLoss(2)
    centred.center.copy_(torch.tensor([[2.0, 0.0]]))
    uniform = DINOLoss(2)(student, torch.zeros(2, 2), 0.04)
    assert centred(student, torch.tensor([[2.0, 0.0], [2.0, 0.0]]), 0.04).item() == pytest.approx(uniform.item())


def test_ema_update_is_exact():
    student, teacher = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    expected = [
        0.9 * t.detach().clone() + 0.1 * s.detach() for s, t in zip(student.parameters(), teacher.parameters())
    ]
    update_teacher(student, teacher, 0.9)
    for t, e in zip(teacher.parameters(), expected):
        torch.testing.assert_close(t, e, rtol=0, atol=1e-7)
    update_teacher(student, teacher, 0.0)
    assert all(torch.equal(s, t) for s, t in zip(student.parameters(), teacher.parameters()))


def test_schedules_warm_up_the_temperature_and_raise_the_momentum_to_one():
    assert teacher_temperature(0, 10, 0.04, 0.07) == pytest.approx(0.04)
    assert teacher_temperature(5, 10, 0.04, 0.07) == pytest.approx(0.055)
    assert teacher_temperature(50, 10, 0.04, 0.07) == pytest.approx(0.07)
    assert teacher_momentum(0, 100) == pytest.approx(0.996)
    assert teacher_momentum(50, 100) == pytest.approx(0.998)
    assert teacher_momentum(100, 100) == pytest.approx(1.0)


def test_default_momentum_rises_from_0996_to_one_along_a_cosine_over_the_run():
    args = DINOTrainingArguments(output_dir="unused")
    assert args.momentum_teacher == 0.996
    assert teacher_momentum(0, 400, args.momentum_teacher) == pytest.approx(0.996)
    assert teacher_momentum(100, 400, args.momentum_teacher) == pytest.approx(1 - 0.004 * (1 + np.cos(np.pi / 4)) / 2)
    assert teacher_momentum(200, 400, args.momentum_teacher) == pytest.approx(0.998)
    assert teacher_momentum(400, 400, args.momentum_teacher) == pytest.approx(1.0)


def test_the_teacher_temperature_defaults_to_dinos_constant_004_and_warms_up_when_asked():
    """DINO's main_dino.py: teacher_temp = warmup_teacher_temp = 0.04, warm-up 0 epochs by default;
    0.04 -> 0.07 over 30 epochs is its option for longer runs (here a share of the steps)."""
    args = DINOTrainingArguments(output_dir="unused")
    assert (args.warmup_teacher_temp, args.teacher_temp, args.warmup_teacher_temp_ratio) == (0.04, 0.04, 0.0)
    assert teacher_temperature(0, 0, args.warmup_teacher_temp, args.teacher_temp) == pytest.approx(0.04)
    warm = round(0.3 * 100)
    assert [teacher_temperature(s, warm, 0.04, 0.07) for s in (0, 15, 30, 99)] == pytest.approx(
        [0.04, 0.055, 0.07, 0.07]
    )


def test_warm_up_and_the_frozen_last_layer_are_small_shares_of_the_steps_and_larger_ones_are_refused():
    args = DINOTrainingArguments(output_dir="unused")
    assert args.warmup_ratio <= 0.1 and args.freeze_last_layer_ratio <= 0.05
    with pytest.raises(PretrainingError, match=r"--warmup-ratio is a share of the training steps; got 0.8"):
        DINOTrainingArguments(output_dir="unused", warmup_ratio=0.8)
    with pytest.raises(PretrainingError, match=r"--freeze-last-layer-ratio"):
        DINOTrainingArguments(output_dir="unused", freeze_last_layer_ratio=-0.1)


def test_gradients_are_clipped_per_parameter_as_dino_not_by_their_global_norm():
    small, large = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    small.grad, large.grad = torch.tensor([0.6, 0.8]), torch.tensor([30.0, 40.0])  # norms 1 and 50
    untouched = torch.nn.Parameter(torch.zeros(1))
    assert clip_gradients([small, large, untouched], 3.0) == pytest.approx([1.0, 50.0])
    torch.testing.assert_close(small.grad, torch.tensor([0.6, 0.8]))  # under the limit: unchanged
    torch.testing.assert_close(large.grad, torch.tensor([1.8, 2.4]), rtol=1e-5, atol=1e-6)  # norm 3 alone
    # a global-norm clip (norm sqrt(2501)) would have shrunk the small gradient too
    assert DINOTrainingArguments(output_dir="unused").max_grad_norm == 3.0


def test_local_crops_hold_several_patches_and_smaller_ones_are_refused(tmp_path, tiny_backbone):
    assert default_local_size(224, 16) == 96  # DINO's 6 x 6 patches
    assert default_local_size(32, 8) == 24  # 3 x 3 patches, not 3/7 of 32 (2 x 2)
    assert default_local_size(16, 8) == 16  # never above the global crop
    with pytest.raises(PretrainingError, match=r"--local-size 8 px is under 2 x 2 patches of 8 px"):
        train_dino(run_args(tmp_path / "run", tiny_backbone, local_size=8))


def test_colour_jitter_can_be_turned_off_and_the_default_draws_are_unchanged():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8))
    crops = dict(global_size=32, local_size=16, num_local=1, mean=(0.5,) * 3, std=(0.25,) * 3, seed=1)
    jittered = MultiCrop(**crops)(image, 0, 0)
    plain = MultiCrop(**crops, colour_jitter=0.0)(image, 0, 0)
    assert any(not torch.equal(a, b) for a, b in zip(jittered, plain))
    assert all(torch.equal(a, b) for a, b in zip(jittered, MultiCrop(**crops, colour_jitter=0.8)(image, 0, 0)))


def test_drop_path_reaches_the_student_backbone_and_rates_of_one_are_refused():
    args = DINOTrainingArguments(output_dir="unused", image_size=32, drop_path_rate=0.1)
    assert build_backbone(args).config.drop_path_rate == 0.1
    assert build_backbone(DINOTrainingArguments(output_dir="unused", image_size=32)).config.drop_path_rate == 0.0
    with pytest.raises(PretrainingError, match="--drop-path-rate a rate in"):
        DINOTrainingArguments(output_dir="unused", drop_path_rate=1.0)


def test_diagnostics_of_a_uniform_teacher_and_an_identical_student():
    out_dim = 8
    # a constant teacher (every logit equal) is uniform: entropy log(K), batch entropy log(K)
    teacher = torch.zeros(4, out_dim)  # 2 global views x 2 images
    student = torch.zeros(6, out_dim)  # 3 views x 2 images
    measured = dino_diagnostics(student, teacher, torch.zeros(1, out_dim), teacher_temp=0.04)
    assert measured["teacher_entropy"] == pytest.approx(np.log(out_dim))
    assert measured["teacher_batch_entropy"] == pytest.approx(np.log(out_dim))
    assert measured["kl"] == pytest.approx(0.0, abs=1e-6)  # a uniform student predicts it exactly
    # a student whose every view equals the teacher's distribution: KL 0, the loss is the entropy alone
    logits = torch.randn(2, out_dim)
    teacher = torch.cat([logits, logits]) * 0.04
    student = torch.cat([logits, logits, logits]) * 0.1  # same softmax at T_s = 0.1 as the teacher at 0.04
    measured = dino_diagnostics(student, teacher, torch.zeros(1, out_dim), teacher_temp=0.04)
    assert measured["kl"] == pytest.approx(0.0, abs=1e-5)
    loss = DINOLoss(out_dim)(student, teacher, 0.04).item()
    assert loss == pytest.approx(measured["teacher_entropy"] + measured["kl"], rel=1e-5)
    # a one-hot teacher collapsed onto one prototype: both entropies 0; the centre's norm is reported
    collapsed = torch.zeros(4, out_dim)
    collapsed[:, 3] = 10.0
    center = torch.full((1, out_dim), 0.5)
    measured = dino_diagnostics(student, collapsed, center, teacher_temp=0.04)
    assert measured["teacher_entropy"] == pytest.approx(0.0, abs=1e-6)
    assert measured["teacher_batch_entropy"] == pytest.approx(0.0, abs=1e-6)
    assert measured["center_norm"] == pytest.approx(0.5 * np.sqrt(out_dim))
    assert measured["kl"] > 0


def test_head_prototypes_are_unit_vectors_and_frozen_in_norm():
    head = DINOHead(32, 10, hidden_dim=16, bottleneck_dim=8)
    weight = head.last_layer.weight
    torch.testing.assert_close(weight.norm(dim=1), torch.ones(10))
    assert not head.last_layer.parametrizations.weight.original0.requires_grad
    assert head(torch.randn(4, 32)).shape == (4, 10)


def test_multicrop_gives_global_and_local_views_reproducibly():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8))
    crops = MultiCrop(32, 16, 3, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), seed=1)
    views = crops(image, index=4, epoch=0)
    assert [tuple(v.shape) for v in views] == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 3
    assert all(torch.equal(a, b) for a, b in zip(views, crops(image, index=4, epoch=0)))
    assert not torch.equal(views[0], crops(image, index=4, epoch=1)[0])


@pytest.mark.parametrize("pooling", ["cls", "lazystrike"])
def test_the_head_reads_the_backbone_pooler_output_for_either_readout(pooling):
    backbone = LastViTModel(tiny_config(pooling=pooling)).eval()
    model = DINOModel(backbone, DINOHead(32, 12, 16, 8)).eval()
    views = [torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32), torch.randn(2, 3, 16, 16)]
    out = model(views)
    assert out.shape == (6, 12)
    with torch.no_grad():
        pooled = torch.cat([backbone(v).pooler_output for v in views])
        if pooling == "cls":
            torch.testing.assert_close(backbone(views[0]).pooler_output, backbone(views[0]).last_hidden_state[:, 0])
    torch.testing.assert_close(out, model.head(pooled), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# The trainer
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory):
    folder = tmp_path_factory.mktemp("backbone") / "tiny"
    LastViTModel(tiny_config(pooling="lazystrike")).save_pretrained(folder)
    return folder


def run_args(output_dir, backbone, **overrides):
    return DINOTrainingArguments(
        output_dir=output_dir,
        model_name_or_path=str(backbone),
        scenes_train=24,
        scenes_test=12,
        image_size=32,
        epochs=1,
        batch_size=6,
        num_local_crops=2,
        out_dim=32,
        head_hidden_dim=32,
        bottleneck_dim=16,
        learning_rate=0.05,
        warmup_ratio=0.25,
        freeze_last_layer_ratio=0.25,
        knn_k=5,
        progress=False,
        **overrides,
    )


@pytest.fixture(scope="module")
def scenes_with_validation(tmp_path_factory):
    """24 training scenes, 6 validation scenes for the learning curve, 12 test scenes."""
    import datasets

    from lastvit.data.scenes import build_scenes

    data = build_scenes(30, 12, image_size=32, seed=0)
    parts = data["train"].train_test_split(test_size=6, seed=0)
    folder = tmp_path_factory.mktemp("data") / "scenes"
    datasets.DatasetDict(train=parts["train"], validation=parts["test"], test=data["test"]).save_to_disk(folder)
    return str(folder)


CURVES = {"diagnostics_every": 1, "knn_every": 2, "eval_split": "test", "curve_bank": 16}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_backbone, scenes_with_validation):
    folder = tmp_path_factory.mktemp("dino") / "full"
    args = run_args(folder, tiny_backbone, save_every=2, dataset=scenes_with_validation, **CURVES)
    return folder, train_dino(args)


def test_a_killed_and_resumed_run_ends_bit_identical_to_an_uninterrupted_one(
    uninterrupted, tiny_backbone, scenes_with_validation, tmp_path
):
    full, results = uninterrupted
    assert results["step"] == 4
    resumed = tmp_path / "resumed"
    flags = dict(save_every=2, dataset=scenes_with_validation, **CURVES)
    assert train_dino(run_args(resumed, tiny_backbone, stop_after=2, **flags)) == {"stopped_at_step": 2}
    assert train_dino(run_args(resumed, tiny_backbone, resume=True, **flags)) == results  # curves included
    for name in ("model.safetensors", "dino_head.safetensors"):
        a, b = load_file(full / name), load_file(resumed / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    state = [json.loads((f / "checkpoints/last/trainer_state.json").read_text()) for f in (full, resumed)]
    assert state[0]["losses"] == state[1]["losses"] and len(state[0]["losses"]) == 4


def test_training_moves_the_teacher_and_reports_it_beside_the_untrained_start(uninterrupted, tiny_backbone):
    folder, results = uninterrupted
    start, teacher = load_file(tiny_backbone / "model.safetensors"), load_file(folder / "model.safetensors")
    assert any(not torch.equal(start[k], teacher[k]) for k in start)
    for name in ("teacher", "untrained"):
        assert set(results[name]) == {"knn_top1", "point_in_box", "corloc", "segmentation_iou", "map_auroc"}
        assert all(0 <= v <= 1 for v in results[name].values())
    card = (folder / "README.md").read_text()
    assert "lastvit-train-dino" in card and "pipeline_tag: image-feature-extraction" in card
    head = load_head(folder)
    assert head(torch.randn(2, 32)).shape == (2, 32)


def test_the_run_records_collapse_diagnostics_and_a_validation_knn_curve_from_the_untrained_start(uninterrupted):
    folder, results = uninterrupted
    curves = json.loads((folder / "training_curves.json").read_text())
    assert curves == results["curves"]
    assert [d["step"] for d in curves["diagnostics"]] == [0, 1, 2, 3]
    first = curves["diagnostics"][0]
    assert set(first) >= {"teacher_entropy", "teacher_batch_entropy", "kl", "center_norm", "loss", "momentum"}
    assert first["center_norm"] == 0.0  # the centre starts at zero and is updated after the step
    assert 0 <= first["teacher_entropy"] <= np.log(32) + 1e-6
    assert first["loss"] == pytest.approx(first["teacher_entropy"] + first["kl"], rel=1e-4)
    assert [p["step"] for p in curves["knn_curve"]] == [0, 2, 4]  # every 2 steps and at the end
    # step 0 is the untrained start (the teacher before any update), measured on the 6 validation images;
    # the scenes name their backgrounds, so each point also has the background's k-NN top-1
    assert all(0 <= p["knn_top1"] <= 1 and 0 <= p["knn_background_top1"] <= 1 for p in curves["knn_curve"])


def test_a_curve_point_is_dinos_knn_top1_of_the_class_and_of_the_background(tiny_backbone, scenes_with_validation):
    import datasets

    from lastvit.data.loading import ImageTransform
    from lastvit.measure.pretrained_eval import knn_accuracy
    from lastvit.training.dino_trainer import curve_knn, knn_curve_arrays
    from lastvit.training.pretraining import eval_arrays

    args = run_args("unused", tiny_backbone, dataset=scenes_with_validation, curve_bank=16)
    splits = datasets.load_from_disk(scenes_with_validation)
    train, validation = splits["train"], splits["validation"]
    backbone = LastViTModel.from_pretrained(tiny_backbone)
    transform = ImageTransform(size=32, mean=(0.5,) * 3, std=(0.5,) * 3, train=False)
    point = curve_knn(backbone, knn_curve_arrays(train, validation, transform, args), k=20)
    bank, _, _, _ = eval_arrays(train.select(range(16)), transform)
    query, labels, _, _ = eval_arrays(validation, transform)
    assert point["knn_top1"] == pytest.approx(
        knn_accuracy(backbone, bank, train["label"][:16], query, labels), abs=1e-6
    )
    names = sorted(set(train["background_id"]) | set(validation["background_id"]))
    to_id = (
        [names.index(b) for b in train["background_id"][:16]],
        [names.index(b) for b in validation["background_id"]],
    )
    assert point["knn_background_top1"] == pytest.approx(
        knn_accuracy(backbone, bank, to_id[0], query, to_id[1]), abs=1e-6
    )


def test_the_knn_curve_refuses_the_evaluation_split(tmp_path, tiny_backbone, scenes_with_validation):
    flags = dict(dataset=scenes_with_validation, knn_every=2, eval_split="test", curve_split="test")
    with pytest.raises(PretrainingError, match=r"--curve-split test is the evaluation split"):
        train_dino(run_args(tmp_path / "run", tiny_backbone, **flags))


def test_exported_teacher_loads_with_automodel_in_a_fresh_process_without_the_package(uninterrupted, tmp_path):
    folder, _ = uninterrupted
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = LastViTModel.from_pretrained(folder).eval()(pixels).pooler_output
    torch.save({"pixels": pixels, "pooled": expected}, tmp_path / "expected.pt")
    run_isolated(
        tmp_path,
        """
        from transformers import AutoImageProcessor, AutoModel

        model = AutoModel.from_pretrained(ARGS["folder"], trust_remote_code=True).eval()
        check_remote(model)
        check_remote(AutoImageProcessor.from_pretrained(ARGS["folder"], trust_remote_code=True))
        expected = torch.load(ARGS["expected"], weights_only=True)
        with torch.no_grad():
            check_close("pooled", model(expected["pixels"]).pooler_output, expected["pooled"])
        """,
        folder=folder,
        expected=tmp_path / "expected.pt",
    )


def test_missing_image_column_names_the_columns_there_are(tmp_path, tiny_backbone):
    import datasets

    split = datasets.Dataset.from_dict({"picture": [Image.new("RGB", (32, 32))] * 4})
    datasets.DatasetDict(train=split, test=split).save_to_disk(tmp_path / "data")
    with pytest.raises(PretrainingError, match=r"no column 'image'.*\['picture'\].*--image-column"):
        train_dino(run_args(tmp_path / "run", tiny_backbone, dataset=str(tmp_path / "data")))


class _FeaturesAreInputs(torch.nn.Module):
    """A stand-in backbone whose global feature is its input vector."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, pixel_values):
        return SimpleNamespace(pooler_output=pixel_values)


def test_knn_votes_are_weighted_by_exp_cosine_over_temperature_not_counted():
    """DINO's k-NN: one very close neighbour of class 1 outvotes two distant ones of class 0."""
    from lastvit.measure.pretrained_eval import knn_accuracy

    train = torch.tensor([[0.0, 1.0], [1.0, 0.2], [1.0, 0.3]])
    train_labels = [1, 0, 0]
    test = torch.tensor([[0.0, 1.0], [1.0, 0.25]])
    assert knn_accuracy(_FeaturesAreInputs(), train, train_labels, test, [1, 0], k=3) == 1.0
    # a majority vote (every weight equal: an infinite temperature) gets the first image wrong
    assert knn_accuracy(_FeaturesAreInputs(), train, train_labels, test, [1, 0], k=3, temperature=1e9) == 0.5
