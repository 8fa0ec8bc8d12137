"""DINO training of a LastViT backbone with Accelerate (`lastvit-train-dino`).

Student and teacher are `DINOModel`s (LastViT backbone + DINO head on its `pooler_output`); the
teacher is an EMA of the student, never trained. The recipe is DINO's (facebookresearch/dino
`main_dino.py` defaults): AdamW with linear warm-up (10% of the steps, DINO's 10 of 100 epochs) and
cosine lr, cosine weight decay 0.04 -> 0.4, teacher momentum 0.996 -> 1 (cosine over the steps),
teacher temperature 0.04 (constant by default, as DINO's default; `--warmup-teacher-temp` and
`--warmup-teacher-temp-ratio` give its optional linear warm-up, e.g. 0.04 -> 0.07 as DINO's longer
runs), centre momentum 0.9, per-parameter gradient clipping at 3.0 (DINO's `clip_gradients`), the
last layer frozen for the first 1% of the steps (DINO's first of 100 epochs), multi-crop (2 global +
N local crops of at least 3 x 3 patches), optional drop-path (student only) and colour jitter.
Every schedule is a function of the step, and the teacher, the centre, the optimiser and the RNG
states are in each checkpoint: a resumed run is exact.

Every `--diagnostics-every` steps the run records DINO's collapse diagnostics (teacher entropy, the
entropy of the batch's mean teacher distribution, KL(teacher || student), the centre's norm;
`dino.dino_diagnostics`) and every `--knn-every` steps the teacher's k-NN top-1 on a labelled
validation split (`--curve-split`, never the evaluation split): ``training_curves.json`` in the output
folder, the ``curves`` entry of the results and, with `--report-to`, the tracker (e.g. TensorBoard
under the output folder). Step 0 is the untrained start.

Several processes: only the student is prepared (DDP, or FSDP version 2); the teacher is a plain
module on every process, never wrapped and never given gradients. Its EMA reads the student through
the unwrapped module (under FSDP the full parameters, gathered once per step, so the teacher stays
whole on every process and the evaluation and export need no collective), and the centre update
averages the teacher outputs over all processes, as DINO's `update_center`. With equal per-process
batches, N processes of batch B follow the same trajectory as one process of batch N x B.

Output: the teacher backbone as a LastViT folder (`AutoModel.from_pretrained(dir,
trust_remote_code=True)`), its image processor and model card, the teacher head in
``dino_head.safetensors`` (+ ``dino_head.json``) for continued training, and ``eval_results.json``:
k-NN top-1 of the teacher's global feature on the labelled split, and on data with boxes and masks
Point-in-Box, CorLoc and coarse-segmentation IoU from Patch-Score maps, and on an evaluation split
with the background challenge's counterfactual renderings (``image_<set>`` columns) the k-NN top-1
on each, BG-gap and flip rate; each next to the same measurements of the untrained backbone.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from lastvit.arguments import option, to_argv
from lastvit.model_choices import POOLING_TYPES
from lastvit.training.config import PRESETS
from lastvit.training.pretraining import PretrainingError

HEAD_FILE, HEAD_CONFIG = "dino_head.safetensors", "dino_head.json"
CURVES_FILE = "training_curves.json"


@dataclass(kw_only=True)
class DINOTrainingArguments:
    """One DINO run; fields are the `lastvit-train-dino` flags."""

    output_dir: Path = option(help="the folder this run writes (teacher, head, card, checkpoints)")
    dataset: str = option(
        "scenes", "'scenes' (built-in), 'imagefolder' (with --data-dir), a save_to_disk folder or a Hub name"
    )
    data_dir: str | None = option(None, "folder for --dataset imagefolder")
    train_split: str = option("train", "training split")
    eval_split: str | None = option(None, "evaluation split (default: validation, else test)")
    image_column: str = option("image", "column holding the images")
    label_column: str = option("label", "class column, used only by the k-NN sanity metric")
    scenes_train: int = option(4000, "scenes: training images")
    scenes_test: int = option(500, "scenes: test images")
    preset: str = option("micro", "backbone from scratch", choices=sorted(PRESETS))
    model_name_or_path: str | None = option(None, "start the backbone from a LastViT folder")
    image_size: int | None = option(None, "global crop size (default: the preset's)")
    local_size: int | None = option(
        None, "local crop size (default: 3/7 of the global size, a patch multiple, at least 3 patches wide)"
    )
    num_local_crops: int = option(4, "local crops per image (DINO: 8 or 10)")
    global_crop_scale: tuple[float, float] = option((0.4, 1.0), "area range of the global crops (DINO: 0.4 1)")
    local_crop_scale: tuple[float, float] = option((0.05, 0.4), "area range of the local crops (DINO: 0.05 0.4)")
    colour_jitter: float = option(0.8, "probability of colour jitter per crop (DINO: 0.8; 0: off)")
    drop_path_rate: float = option(0.0, "stochastic depth of the student backbone (DINO ViT-S: 0.1; teacher: none)")
    pooling: str = option("lazystrike", "the backbone readout the head reads", choices=POOLING_TYPES)
    top_k: int | None = option(None, "LazyStrike K as a count")
    top_k_ratio: float | None = option(None, "LazyStrike K as a fraction of the patches (default: K = 1)")
    out_dim: int = option(1024, "prototypes of the head (DINO: 65536)")
    head_hidden_dim: int = option(512, "head MLP width (DINO: 2048)")
    bottleneck_dim: int = option(128, "head bottleneck (DINO: 256)")
    epochs: float = option(10, "passes over the training set")
    batch_size: int = option(64, "per-device batch size")
    learning_rate: float = option(5e-4, "peak lr at batch 256, scaled linearly by the total batch (DINO's rule)")
    min_lr: float = option(1e-6, "final lr")
    warmup_ratio: float = option(0.1, "share of the steps in linear lr warm-up (DINO: 10 of 100 epochs)")
    weight_decay: float = option(0.04, "initial weight decay")
    weight_decay_end: float = option(0.4, "final weight decay")
    momentum_teacher: float = option(0.996, "initial teacher EMA momentum, raised to 1 along a cosine (DINO: 0.996)")
    teacher_temp: float = option(0.04, "teacher temperature after its warm-up (DINO: 0.04; 0.07 for long runs)")
    warmup_teacher_temp: float = option(0.04, "initial teacher temperature (DINO: 0.04)")
    warmup_teacher_temp_ratio: float = option(
        0.0, "share of the steps over which the teacher temperature rises linearly (DINO: 30 of 100-300 epochs)"
    )
    freeze_last_layer_ratio: float = option(
        0.01, "share of the steps with the prototype layer frozen (DINO: its first of 100 epochs)"
    )
    max_grad_norm: float | None = option(
        3.0, "clip each parameter's gradient to this L2 norm on its own (DINO's clip_gradients; 0: off)"
    )
    diagnostics_every: int = option(10, "record the collapse diagnostics every N steps (0: never)")
    knn_every: int = option(0, "measure the teacher's k-NN top-1 on --curve-split every N steps (0: never)")
    curve_split: str = option("validation", "labelled split of the k-NN learning curve (not the evaluation split)")
    curve_bank: int = option(2000, "training images in the k-NN curve's memory bank")
    curve_background_column: str | None = option(
        "background_id",
        "where both splits have this column (the background's source), the curve also records the k-NN top-1 "
        "of the background: a teacher that tells backgrounds apart, not classes, keys on the background",
    )
    knn_k: int = option(20, "neighbours of the k-NN sanity metric")
    seed: int = option(0, "seed of weights, order and augmentation")
    report_to: str = option(
        "none", "also log the curves and diagnostics to this tracker", choices=("none", "tensorboard", "wandb", "all")
    )
    mixed_precision: str = option(
        "auto",
        "auto (default): bf16 where every GPU supports it, else fp16 with loss scaling, fp32 on CPUs; or no / fp16 / bf16",
        choices=("auto", "no", "fp16", "bf16"),
    )
    overwrite: bool = option(False, "replace an output folder that holds another run")
    resume: bool = option(False, "continue the run in --output-dir from its last checkpoint")
    save_every: int = option(0, "save a resume checkpoint every N steps (0: each epoch)")
    stop_after: int | None = option(None, "stop after N steps of this invocation, as a killed job would")
    progress: bool = option(True, "hide progress bars", flag="--no-progress")

    def __post_init__(self):
        self.output_dir = Path(self.output_dir)
        self.global_crop_scale = tuple(self.global_crop_scale)
        self.local_crop_scale = tuple(self.local_crop_scale)
        if self.top_k is not None and self.top_k_ratio is not None:
            raise PretrainingError("pass only one of --top-k and --top-k-ratio")
        for flag, value, most in (
            ("--warmup-ratio", self.warmup_ratio, 0.5),
            ("--freeze-last-layer-ratio", self.freeze_last_layer_ratio, 0.5),
            ("--warmup-teacher-temp-ratio", self.warmup_teacher_temp_ratio, 1.0),
        ):
            if not 0.0 <= value <= most:
                raise PretrainingError(
                    f"{flag} is a share of the training steps; got {value}. Give a value in [0, {most}] "
                    "(DINO: warm-up 0.1, frozen last layer 0.01), so that most steps train."
                )
        for flag, (low, high) in (
            ("--global-crop-scale", self.global_crop_scale),
            ("--local-crop-scale", self.local_crop_scale),
        ):
            if not 0.0 < low <= high <= 1.0:
                raise PretrainingError(f"{flag} is an area range within (0, 1]; got {low} {high}.")
        if not 0.0 <= self.colour_jitter <= 1.0 or not 0.0 <= self.drop_path_rate < 1.0:
            raise PretrainingError("--colour-jitter is a probability in [0, 1] and --drop-path-rate a rate in [0, 1).")


def build_backbone(args: DINOTrainingArguments):
    from lastvit.training.presets import preset_config
    from modeling_lastvit import LastViTModel

    pooling = {"pooling": args.pooling, "lazystrike_top_k": args.top_k, "lazystrike_top_k_ratio": args.top_k_ratio}
    pooling["drop_path_rate"] = args.drop_path_rate
    if args.top_k is None and args.top_k_ratio is None:
        pooling["lazystrike_top_k"] = 1
    if args.model_name_or_path:
        return LastViTModel.from_pretrained(args.model_name_or_path, **pooling)
    return LastViTModel(preset_config(args.preset, args.image_size, **pooling))


class _Views:
    def __init__(self, split, transform, image_column, label_column):
        self.split, self.transform = split, transform
        self.image_column, self.label_column = image_column, label_column
        self.has_labels = label_column in split.column_names
        self.epoch = 0

    def __len__(self):
        return len(self.split)

    def __getitem__(self, index):
        row = self.split[index]
        return self.transform(row[self.image_column], index, self.epoch), int(
            row[self.label_column]
        ) if self.has_labels else -1


def train_dino(args: DINOTrainingArguments) -> dict:
    """Run the DINO training `args` describe; returns the final evaluation (or the stop step). The
    output folder is claimed only once the inputs are read (an --overwrite'n run comes back on failure)."""
    from lastvit.training.pretraining import output_folder

    with output_folder(args) as output:
        return _train_dino(args, output)


def _train_dino(args: DINOTrainingArguments, output) -> dict:
    from lastvit.data.loading import build_processor
    from lastvit.training.dino import DINOLoss
    from lastvit.training.pretraining import PretrainingLoop, claim, start_run

    accelerator = start_run(args)
    train_split, eval_split = _load_training_splits(args)
    curve_split = load_curve_split(args, eval_split) if args.knn_every else None
    backbone = build_backbone(args)
    processor = build_processor(backbone)
    local = _local_crop_size(args, backbone)
    student, teacher, untrained = _student_and_teacher(args, backbone)
    loss_fn = DINOLoss(args.out_dim)
    data, sampler, loader = _crop_loader(args, train_split, backbone, processor, local)
    optimizer = _optimizer(student)
    student, optimizer, loader = accelerator.prepare(student, optimizer, loader)
    teacher.to(accelerator.device)
    loss_fn.to(accelerator.device)
    accelerator.register_for_checkpointing(teacher, loss_fn)

    total_steps = max(1, math.ceil(args.epochs * len(loader)))
    eval_transform = _eval_transform(backbone, processor)
    curve = None
    if curve_split is not None and accelerator.is_main_process:
        curve = knn_curve_arrays(train_split, curve_split, eval_transform, args)

    steps = PretrainingLoop(accelerator, args, total_steps, "dino", resume=claim(accelerator, output, args))
    if args.report_to != "none":
        accelerator.init_trackers("dino", config={k: str(v) for k, v in asdict(args).items()})
    train_step = _DINOStep(args, accelerator, steps, (student, teacher, loss_fn, optimizer), curve)
    student.train()
    results = steps.train(loader, train_step, epoch_aware=(sampler, data))
    if "stopped_at_step" in results:
        return results
    if accelerator.is_main_process:
        train_step.measure_curve(total_steps)
        results["curves"] = {"diagnostics": steps.state["diagnostics"], "knn_curve": steps.state["knn_curve"]}
        results.update(evaluate_backbone(teacher.backbone, untrained, train_split, eval_split, eval_transform, args))
        write_dino_folder(args, teacher, processor, results)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return results


def _load_training_splits(args: DINOTrainingArguments):
    """``(train, eval)`` splits of `--dataset` (the built-in scenes at the run's size and seed)."""
    from lastvit.data.loading import load_splits

    scenes = {
        "num_train": args.scenes_train,
        "num_test": args.scenes_test,
        "seed": args.seed,
        "image_size": args.image_size or PRESETS[args.preset].image_size,
    }
    train_split, eval_split = load_splits(args.dataset, args.train_split, args.eval_split, args.data_dir, scenes)
    if args.image_column not in train_split.column_names:
        raise PretrainingError(
            f"the training split has no column {args.image_column!r}; its columns are {train_split.column_names} "
            "(set --image-column)."
        )
    return train_split, eval_split


def _local_crop_size(args: DINOTrainingArguments, backbone) -> int:
    """The local crop side (`--local-size`, or DINO's share of the global one): at least 2 x 2 patches."""
    from lastvit.training.dino import default_local_size

    size, patch = backbone.config.image_size_hw[0], backbone.config.patch_size_hw[0]
    local = args.local_size or default_local_size(size, patch)
    if local < 2 * patch:
        raise PretrainingError(
            f"--local-size {local} px is under 2 x 2 patches of {patch} px: such a crop holds no object part. "
            f"Give at least {2 * patch} (DINO: 96 px = 6 x 6 patches of 16)."
        )
    return local


def _student_and_teacher(args: DINOTrainingArguments, backbone):
    """``(student, teacher, untrained)``: the student `DINOModel`, its teacher (a copy without
    gradients or stochastic depth) and the teacher backbone's exact untrained start."""
    from lastvit.training.dino import DINOHead, DINOModel

    student = DINOModel(
        backbone,
        DINOHead(backbone.config.pooled_feature_size, args.out_dim, args.head_hidden_dim, args.bottleneck_dim),
    )
    teacher = copy.deepcopy(student).requires_grad_(False)
    if args.drop_path_rate:  # DINO's teacher has no stochastic depth
        teacher.backbone = type(backbone)(
            type(backbone.config).from_dict({**backbone.config.to_dict(), "drop_path_rate": 0.0})
        )
        teacher.backbone.load_state_dict(backbone.state_dict())
        teacher.requires_grad_(False)
    teacher.eval()
    return student, teacher, copy.deepcopy(teacher.backbone).eval()


def _crop_loader(args: DINOTrainingArguments, train_split, backbone, processor, local: int):
    """``(views, sampler, loader)``: the training split as multi-crop views (2 global + N local),
    in the seed's order, whole batches only."""
    import torch

    from lastvit.data.loading import EpochSampler
    from lastvit.training.dino import MultiCrop, collate_crops

    crops = MultiCrop(
        backbone.config.image_size_hw[0],
        local,
        args.num_local_crops,
        tuple(processor.image_mean),
        tuple(processor.image_std),
        args.seed,
        global_scale=args.global_crop_scale,
        local_scale=args.local_crop_scale,
        colour_jitter=args.colour_jitter,
    )
    data = _Views(train_split, crops, args.image_column, args.label_column)
    sampler = EpochSampler(len(data), args.seed, shuffle=True)
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=args.batch_size,
        sampler=sampler,
        drop_last=True,
        collate_fn=collate_crops,
        generator=torch.Generator().manual_seed(args.seed),
    )
    if len(loader) == 0:
        raise PretrainingError(
            f"the training split has {len(data)} images, fewer than one batch of {args.batch_size}."
        )
    return data, sampler, loader


def _optimizer(student):
    """AdamW with DINO's two groups: weight decay (scheduled per step) on weights, none on biases and norms."""
    import torch

    decay = [p for n, p in student.named_parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for n, p in student.named_parameters() if p.requires_grad and p.ndim <= 1]
    return torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}])


def _eval_transform(backbone, processor):
    from lastvit.data.loading import ImageTransform

    size = backbone.config.image_size_hw[0]
    return ImageTransform(size=size, mean=tuple(processor.image_mean), std=tuple(processor.image_std), train=False)


class _DINOStep:
    """One DINO training step (`__call__`, for `PretrainingLoop.train`): the step's schedules (lr,
    weight decay, teacher temperature and momentum), the loss against the centred teacher,
    per-parameter clipping, the frozen last layer, the teacher's EMA and the centre update; every
    `--diagnostics-every` steps the collapse diagnostics and every `--knn-every` steps a point of the
    k-NN curve (both in the loop's state, so a resumed run keeps them)."""

    def __init__(self, args: DINOTrainingArguments, accelerator, steps, parts, curve):
        self.args, self.accelerator, self.steps, self.curve = args, accelerator, steps, curve
        self.student, self.teacher, self.loss_fn, self.optimizer = parts
        self.total_steps = steps.total_steps
        self.peak_lr = args.learning_rate * args.batch_size * accelerator.num_processes / 256
        self.warmup = round(args.warmup_ratio * self.total_steps)
        self.temp_warmup = round(args.warmup_teacher_temp_ratio * self.total_steps)
        self.frozen_steps = round(args.freeze_last_layer_ratio * self.total_steps)
        steps.state.setdefault("diagnostics", [])
        steps.state.setdefault("knn_curve", [])

    def measure_curve(self, step: int) -> None:
        """The teacher's k-NN top-1 on the curve split at `step` (once per step)."""
        state = self.steps.state
        if self.curve is not None and not any(point["step"] == step for point in state["knn_curve"]):
            point = curve_knn(self.teacher.backbone, self.curve, self.args.knn_k)
            state["knn_curve"].append({"step": step, **point})
            self.accelerator.log({f"val/{key}": value for key, value in point.items()}, step=step)

    def __call__(self, batch) -> float:
        import torch

        from lastvit.training.dino import clip_gradients, teacher_temperature
        from lastvit.training.pretraining import mean_over_processes

        args, accelerator, step = self.args, self.accelerator, self.steps.state["step"]
        if args.knn_every and step % args.knn_every == 0:
            self.measure_curve(step)
        lr = self._set_schedules(step)
        views = batch["crops"]
        with torch.no_grad(), accelerator.autocast():
            teacher_out = self.teacher(views[:2])
        student_out = self.student(views)
        temp = teacher_temperature(step, self.temp_warmup, args.warmup_teacher_temp, args.teacher_temp)
        loss = self.loss_fn(student_out.float(), teacher_out.float(), temp)
        if not torch.isfinite(loss):
            raise PretrainingError(f"the loss became {loss.item()} at step {step + 1}; lower the learning rate.")
        accelerator.backward(loss)
        if args.max_grad_norm:
            clip_gradients(self.student.parameters(), args.max_grad_norm)
        if step < self.frozen_steps:
            for p in accelerator.unwrap_model(self.student).head.last_layer.parameters():
                p.grad = None
        self.optimizer.step()
        self.optimizer.zero_grad()
        momentum = self._update_teacher(step)
        if args.diagnostics_every and step % args.diagnostics_every == 0:
            self._record_diagnostics(step, loss, student_out, teacher_out, lr, temp, momentum)
        self.loss_fn.update_center(teacher_out, reduce=lambda x: accelerator.reduce(x, "mean"))
        return mean_over_processes(accelerator, loss)

    def _set_schedules(self, step: int) -> float:
        """Set the step's lr (warm-up, then cosine) and weight decay (cosine); returns the lr."""
        from lastvit.training.pretraining import cosine_schedule

        args, groups = self.args, self.optimizer.param_groups
        lr = cosine_schedule(self.peak_lr, args.min_lr, step, self.total_steps, self.warmup)
        groups[0]["lr"] = groups[1]["lr"] = lr
        groups[0]["weight_decay"] = cosine_schedule(args.weight_decay, args.weight_decay_end, step, self.total_steps)
        return lr

    def _update_teacher(self, step: int) -> float:
        """The teacher's EMA of the student at the step's momentum (cosine to 1); returns the momentum."""
        from lastvit.training.dino import teacher_momentum, update_teacher

        momentum = teacher_momentum(step, self.total_steps, self.args.momentum_teacher)
        update_teacher(self.accelerator.unwrap_model(self.student), self.teacher, momentum)
        return momentum

    def _record_diagnostics(self, step, loss, student_out, teacher_out, lr, temp, momentum) -> None:
        from lastvit.training.dino import dino_diagnostics

        loss_fn = self.loss_fn
        measured = dino_diagnostics(
            student_out, teacher_out, loss_fn.center, temp, loss_fn.student_temp, loss_fn.num_global
        )
        diagnostics = self.steps.state["diagnostics"]
        diagnostics.append(
            {"step": step, "loss": round(loss.item(), 6), "lr": lr, "teacher_temp": temp, "momentum": momentum}
            | {k: round(v, 6) for k, v in measured.items()}
        )
        self.accelerator.log({f"dino/{k}": v for k, v in diagnostics[-1].items() if k != "step"}, step=step)


def load_curve_split(args: DINOTrainingArguments, eval_split):
    """The labelled split of the k-NN learning curve (`--curve-split`); never the evaluation split,
    which the final measurement keeps unseen."""
    from lastvit.data.loading import DataError, load_splits

    if args.dataset == "scenes":
        raise PretrainingError(
            "--knn-every: the built-in scenes have train and test splits only; save a DatasetDict with a "
            "validation split (lastvit-study-pretraining does) and pass it as --dataset, or --knn-every 0."
        )
    try:
        split, _ = load_splits(args.dataset, args.curve_split, None, args.data_dir)
    except DataError as error:
        raise PretrainingError(f"--knn-every needs a labelled --curve-split: {error}") from error
    if split._fingerprint == eval_split._fingerprint:
        raise PretrainingError(
            f"--curve-split {args.curve_split} is the evaluation split; choose the scale on a validation split and "
            "keep the evaluation split for the final measurement (set --eval-split test, or another --curve-split)."
        )
    if args.label_column not in split.column_names:
        raise PretrainingError(f"the curve split {args.curve_split!r} has no labels ({args.label_column!r}).")
    return split


def knn_curve_arrays(train_split, curve_split, transform, args) -> dict:
    """The k-NN curve's inputs: ``bank`` and ``query`` pixels (the first `--curve-bank` training images
    and the whole curve split, at the evaluation transform) and ``labels``, ``{curve key: (bank labels,
    query labels)}``: the class (``knn_top1``) and, where both splits have
    `--curve-background-column`, the background (``knn_background_top1``)."""
    from lastvit.training.pretraining import eval_arrays

    bank = train_split.select(range(min(args.curve_bank, len(train_split))))
    bank_pixels, bank_labels, _, _ = eval_arrays(bank, transform, args.image_column, args.label_column)
    query_pixels, query_labels, _, _ = eval_arrays(curve_split, transform, args.image_column, args.label_column)
    if bank_labels is None:
        raise PretrainingError(f"the training split has no labels ({args.label_column!r}) for the k-NN curve.")
    labels = {"knn_top1": (bank_labels, query_labels)}
    column = args.curve_background_column
    if column and column in bank.column_names and column in curve_split.column_names:
        ids = {name: index for index, name in enumerate(sorted(set(bank[column]) | set(curve_split[column])))}
        labels["knn_background_top1"] = ([ids[b] for b in bank[column]], [ids[b] for b in curve_split[column]])
    return {"bank": bank_pixels, "query": query_pixels, "labels": labels}


def curve_knn(backbone, arrays: dict, k: int) -> dict:
    """One point of the k-NN curve, ``{curve key: top-1}`` (`knn_curve_arrays`), from one pass of
    `backbone` over the bank and the queries; leaves the backbone in eval mode (the teacher's)."""
    import torch

    from lastvit.measure.pretrained_eval import global_features, knn_top1

    bank = torch.nn.functional.normalize(global_features(backbone, arrays["bank"]), dim=-1)
    query = torch.nn.functional.normalize(global_features(backbone, arrays["query"]), dim=-1)
    return {
        key: round(knn_top1(bank, bank_labels, query, query_labels, k), 6)
        for key, (bank_labels, query_labels) in arrays["labels"].items()
    }


def evaluate_backbone(backbone, untrained, train_split, eval_split, transform, args) -> dict:
    """`lastvit.measure.pretrained_eval.dino_metrics` of the trained backbone and of its untrained start,
    on one transform of the splits; when the evaluation split holds the counterfactual renderings of
    the background challenge (``image_<set>`` columns), also their k-NN backgrounds challenge
    (`lastvit.measure.counterfactual`)."""
    from lastvit.measure.counterfactual import counterfactual_pixels, has_counterfactuals, knn_background_test
    from lastvit.measure.pretrained_eval import dino_metrics_on_arrays
    from lastvit.training.pretraining import eval_arrays

    train = eval_arrays(train_split, transform, args.image_column, args.label_column)
    evaluation = eval_arrays(eval_split, transform, args.image_column, args.label_column)
    models = (("teacher", backbone), ("untrained", untrained))
    measured = {name: dino_metrics_on_arrays(model, train, evaluation, args.knn_k) for name, model in models}
    if has_counterfactuals(eval_split) and train[1] is not None and evaluation[1] is not None:
        sets = counterfactual_pixels(eval_split, transform, original=evaluation[0])
        for name, model in models:
            measured[name].update(knn_background_test(model, train[:2], sets, evaluation[1], args.knn_k))
    return measured


def write_dino_folder(args, teacher, processor, results: dict) -> None:
    """Teacher backbone (LastViT folder with remote code), processor, head file, results and card,
    staged and moved in beside `checkpoints/`."""
    from safetensors.torch import save_file

    from lastvit.files import write_folder
    from lastvit.training.pretraining import move_into

    head = teacher.head

    def write(folder: Path):
        teacher.backbone.save_pretrained(folder)
        processor.save_pretrained(folder)
        save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(folder / HEAD_FILE))
        (folder / HEAD_CONFIG).write_text(
            json.dumps(
                {
                    "in_dim": head.mlp[0].in_features,
                    "out_dim": args.out_dim,
                    "hidden_dim": args.head_hidden_dim,
                    "bottleneck_dim": args.bottleneck_dim,
                    "note": "lastvit.training.dino.DINOHead(**config); load_state_dict",
                },
                indent=2,
            )
        )
        (folder / "eval_results.json").write_text(json.dumps(results, indent=2))
        (folder / CURVES_FILE).write_text(json.dumps(results.get("curves", {}), indent=2))
        dino_model_card(args, teacher.backbone, results).save(folder / "README.md")

    staging = args.output_dir / ".final"
    write_folder(staging, write)
    move_into(staging, args.output_dir)


def load_head(folder):
    """The DINO head a run saved (for continued training)."""
    from safetensors.torch import load_file

    from lastvit.training.dino import DINOHead

    config = json.loads((Path(folder) / HEAD_CONFIG).read_text())
    head = DINOHead(config["in_dim"], config["out_dim"], config["hidden_dim"], config["bottleneck_dim"])
    head.load_state_dict(load_file(str(Path(folder) / HEAD_FILE)))
    return head


def dino_model_card(args, backbone, results: dict):
    from huggingface_hub import EvalResult

    from lastvit.cards.model_card import describe_config, render_model_card

    evals = []
    teacher = results.get("teacher", {})
    for key, name in (
        ("knn_top1", "k-NN top-1"),
        ("point_in_box", "Point-in-Box"),
        ("corloc", "CorLoc"),
        ("segmentation_iou", "coarse segmentation IoU"),
    ):
        if key in teacher:
            evals.append(
                EvalResult(
                    task_type="image-feature-extraction",
                    dataset_type=args.dataset,
                    dataset_name=args.dataset,
                    metric_type=key,
                    metric_name=name,
                    metric_value=float(teacher[key]),
                )
            )
    usage = """```python
from transformers import AutoImageProcessor, AutoModel

model = AutoModel.from_pretrained("<this folder>", trust_remote_code=True).eval()
processor = AutoImageProcessor.from_pretrained("<this folder>", trust_remote_code=True)
out = model(**processor(image, return_tensors="pt"))
out.pooler_output  # the global feature the DINO head was trained on
```

The DINO head is in `dino_head.safetensors` (`lastvit.training.dino_trainer.load_head(folder)`)."""
    return render_model_card(
        title=f"LastViT DINO teacher ({backbone.config.pooling} readout)",
        summary=(
            "The teacher backbone of a DINO self-distillation run (`lastvit-train-dino`); the DINO head read "
            "the backbone's `pooler_output`."
        ),
        details=describe_config(backbone.config),
        command=to_argv(args, "lastvit-train-dino"),
        sections=[
            (
                "Results of this run",
                "The trained teacher and its untrained start, same measurements (the learning curves and "
                f"collapse diagnostics are in `{CURVES_FILE}`):\n\n```json\n"
                + json.dumps({k: v for k, v in results.items() if k != "curves"}, indent=2)
                + "\n```",
            ),
            ("How to use", usage),
            ("Limitations", "Trained on the data named in the command only; a toy-scale model unless stated."),
            ("Training arguments", "```json\n" + json.dumps(asdict(args), default=str, indent=2) + "\n```"),
        ],
        pipeline_tag="image-feature-extraction",
        license="mit",
        eval_results=evals or None,
        model_name="lastvit-dino" if evals else None,
        tags=["dino", "self-supervised"],
    )
