"""Image-text contrastive training of a LastViT-CLIP model with Accelerate (`lastvit-train-clip`).

Data: the built-in scenes with generated captions ("a photo of a bird on pine wood", see
`captions`), or any `datasets` image-text set with a text column. The image tower is a LastViT
(`--pooling lazystrike` or the `cls` baseline: the same code path), from scratch or from a LastViT
folder (e.g. `lastvit-convert --from openclip` output); the text tower is transformers' CLIP text
model, from scratch, with a word-level tokenizer trained on the captions (no download). Or both
towers, the temperature and the tokenizer come from a LastViT-CLIP folder (`--model-name-or-path`:
a `lastvit-train-clip` output, or `lastvit-convert --from openclip` with its text tower), with the
image tower's readout set by the pooling flags (e.g. a converted CLS CLIP fine-tuned with
LazyStrike K = N/2, the paper's Tab. 8).

Several processes (DDP): the loss scores every process's pairs against the pairs of all processes
(`lastvit.clip.contrastive`), so N processes of batch B train as one process of batch N x B.
FSDP is refused: `fully_shard` cannot shard the model's scalar `logit_scale`.

The output folder loads with `AutoModel` / `pipeline("zero-shot-image-classification")`
(`trust_remote_code=True`); `image_tower/` is the image tower alone, a LastViT folder. Zero-shot
top-1 and segmentation mIoU on the evaluation split go to ``eval_results.json`` and the card.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from lastvit.arguments import option, to_argv
from lastvit.model_choices import POOLING_TYPES
from lastvit.training.config import PRESETS as VISION_PRESETS
from lastvit.training.pretraining import PretrainingError

LOSSES = ("contrastive", "sigmoid")
SIGLIP_LOGIT_SCALE, SIGLIP_LOGIT_BIAS = math.log(10.0), -10.0  # SigLIP's initial temperature and bias


@dataclass(kw_only=True)
class CLIPTrainingArguments:
    """One CLIP run; fields are the `lastvit-train-clip` flags."""

    output_dir: Path = option(help="the folder this run writes (model, tokenizer, processor, card, checkpoints)")
    dataset: str = option("scenes", "'scenes' (built-in, captions generated), a save_to_disk folder or a Hub name")
    train_split: str = option("train", "training split (default: train)")
    eval_split: str | None = option(None, "evaluation split (default: validation, else test)")
    image_column: str = option("image", "column holding the images")
    text_column: str = option("text", "column holding the captions (scenes: generated)")
    label_column: str = option("label", "class column for the zero-shot evaluation (optional)")
    scenes_train: int = option(4000, "scenes: training images")
    scenes_test: int = option(500, "scenes: test images")
    image_size: int | None = option(None, "input size (default: the preset's, or the tower's)")
    preset: str | None = option(None, "image tower from scratch (default: micro)", choices=sorted(VISION_PRESETS))
    model_name_or_path: str | None = option(
        None, "start both towers, the temperature and the tokenizer from a LastViT-CLIP folder (fine-tuning)"
    )
    vision_model_name_or_path: str | None = option(None, "start the image tower from a LastViT folder")
    pooling: str = option(
        "lazystrike",
        "global readout of the image tower, also of one loaded from a folder",
        choices=POOLING_TYPES,
    )
    top_k: int | None = option(None, "LazyStrike K as a count")
    top_k_ratio: float | None = option(None, "LazyStrike K as a fraction of the patches (default: 0.5, Tab. 8's best)")
    text_width: int | None = option(None, "text tower width (default: 128)")
    text_layers: int | None = option(None, "text tower blocks (default: 2)")
    text_heads: int | None = option(None, "text tower attention heads (default: 4)")
    max_text_length: int = option(32, "longest caption in tokens (longer ones are truncated)")
    projection_dim: int | None = option(None, "joint embedding width (default: 128)")
    loss: str | None = option(
        None,
        "contrastive (CLIP's InfoNCE) or sigmoid (SigLIP's pairwise sigmoid loss with a learned logit bias; a model "
        "without one gets it at -10 and, when new, a logit scale of ln 10, SigLIP's start). Default: sigmoid for a "
        "--model-name-or-path folder with a logit bias, else contrastive",
        choices=LOSSES,
    )
    epochs: float = option(5, "passes over the training set")
    batch_size: int = option(64, "per-device batch size (the contrastive negatives)")
    learning_rate: float = option(5e-4, "peak AdamW learning rate")
    weight_decay: float = option(0.1, "AdamW weight decay")
    warmup_ratio: float = option(0.05, "share of steps in linear warm-up")
    crop_scale_min: float = option(0.6, "smallest area fraction of the random crop")
    max_grad_norm: float | None = option(1.0, "clip gradients to this norm")
    seed: int = option(0, "seed of weights, captions, order and augmentation")
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
        if self.top_k is not None and self.top_k_ratio is not None:
            raise PretrainingError("pass only one of --top-k and --top-k-ratio")
        if self.model_name_or_path:
            sized = [
                flag
                for flag, value in (
                    ("--vision-model-name-or-path", self.vision_model_name_or_path),
                    ("--preset", self.preset),
                    ("--text-width", self.text_width),
                    ("--text-layers", self.text_layers),
                    ("--text-heads", self.text_heads),
                    ("--projection-dim", self.projection_dim),
                )
                if value is not None
            ]
            if sized:
                raise PretrainingError(
                    f"--model-name-or-path brings both towers, their sizes and the tokenizer; drop {', '.join(sized)} "
                    "(only the pooling flags change the loaded model)."
                )

    @property
    def scenes_image_size(self) -> int:
        return self.image_size or VISION_PRESETS[self.preset or "micro"].image_size


def _readout(args: CLIPTrainingArguments) -> dict:
    """The image tower's readout from the pooling flags (LazyStrike default K = N/2, the best K of the
    paper's Tab. 8 on OpenCLIP)."""
    pooling = {"pooling": args.pooling, "lazystrike_top_k": args.top_k, "lazystrike_top_k_ratio": args.top_k_ratio}
    if args.top_k is None and args.top_k_ratio is None:
        pooling["lazystrike_top_k_ratio"] = 0.5
    return pooling


def load_clip_folder(args: CLIPTrainingArguments):
    """``(model, tokenizer)`` from the LastViT-CLIP folder `--model-name-or-path`, every weight loaded
    (both towers, projections, logit_scale), the image tower's readout set by the pooling flags."""
    from transformers import AutoTokenizer

    from modeling_lastvit import LastViTCLIPConfig, LastViTCLIPModel

    folder = args.model_name_or_path
    try:
        model_type = LastViTCLIPConfig.get_config_dict(folder)[0].get("model_type")
    except OSError as error:
        raise PretrainingError(f"--model-name-or-path {folder}: no model config there ({error}).") from error
    if model_type != "lastvit-clip":
        raise PretrainingError(
            f"--model-name-or-path {folder} holds a {model_type!r} model, not LastViT-CLIP; for an image tower "
            "alone use --vision-model-name-or-path."
        )
    config = LastViTCLIPConfig.from_pretrained(folder)
    if args.loss == "contrastive" and config.logit_bias_init_value is not None:
        raise PretrainingError(
            f"--model-name-or-path {folder} has SigLIP's logit bias: it trains with --loss sigmoid (drop --loss)."
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as error:
        raise PretrainingError(
            f"--model-name-or-path {folder}: no tokenizer beside the model ({error}); save the tokenizer of its text "
            "tower there (lastvit-train-clip and lastvit-convert --from openclip do)."
        ) from error
    adds_bias = args.loss == "sigmoid" and config.logit_bias_init_value is None
    if adds_bias:
        config.logit_bias_init_value = SIGLIP_LOGIT_BIAS
    vision = config.vision_config
    try:
        config.vision_config = type(vision).from_dict({**vision.to_dict(), **_readout(args)})
    except ValueError as error:
        raise PretrainingError(f"the pooling flags do not fit the image tower of {folder}: {error}") from error
    model, info = LastViTCLIPModel.from_pretrained(folder, config=config, output_loading_info=True)
    if adds_bias:  # the sigmoid loss's bias is new; every other weight must be there
        info["missing_keys"] = [key for key in info["missing_keys"] if key != "logit_bias"]
    if info["missing_keys"] or info["mismatched_keys"]:
        raise PretrainingError(
            f"--model-name-or-path {folder}: the weights lack {info['missing_keys'] or info['mismatched_keys']}; "
            "give a folder LastViTCLIPModel.save_pretrained wrote."
        )
    positions = config.text_config.max_position_embeddings
    if args.max_text_length > positions:
        raise PretrainingError(
            f"--max-text-length {args.max_text_length} exceeds the text tower's {positions} positions; "
            f"pass --max-text-length {positions} or less."
        )
    return model, tokenizer


def build_model(args: CLIPTrainingArguments, tokenizer):
    from transformers import CLIPTextConfig

    from lastvit.training.presets import preset_config
    from modeling_lastvit import LastViTCLIPConfig, LastViTCLIPModel, LastViTModel

    pooling = _readout(args)
    if args.vision_model_name_or_path:
        tower = LastViTModel.from_pretrained(args.vision_model_name_or_path, **pooling)
        vision_config = tower.config
    else:
        vision_config = preset_config(args.preset or "micro", args.image_size, **pooling)
        tower = None
    width = args.text_width or 128
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=args.text_layers or 2,
        num_attention_heads=args.text_heads or 4,
        max_position_embeddings=args.max_text_length,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    sigmoid = {"logit_scale_init_value": SIGLIP_LOGIT_SCALE, "logit_bias_init_value": SIGLIP_LOGIT_BIAS}
    config = LastViTCLIPConfig(
        vision_config=vision_config,
        text_config=text_config,
        projection_dim=args.projection_dim or 128,
        **(sigmoid if args.loss == "sigmoid" else {}),
    )
    model = LastViTCLIPModel(config)
    if tower is not None:
        missing, _ = model.vision_model.load_state_dict(tower.state_dict(), strict=False)
        if any(not key.startswith("visual_projection") for key in missing):
            raise PretrainingError(f"the image tower checkpoint lacks {missing}; give a LastViT folder.")
    return model


def captioned_splits(args: CLIPTrainingArguments, image_size: int | None = None):
    """``(train, eval, class_names or None)`` with a text column; scenes get generated captions (at
    `image_size`, default: --image-size or the preset's)."""
    from lastvit.clip.captions import check_captions, readable, scene_captions
    from lastvit.data.loading import label_names, load_splits

    scenes = {
        "num_train": args.scenes_train,
        "num_test": args.scenes_test,
        "seed": args.seed,
        "image_size": image_size or args.scenes_image_size,
    }
    train, evaluation = load_splits(args.dataset, args.train_split, args.eval_split, None, scenes)
    names = label_names(train, args.label_column) if args.label_column in train.column_names else None
    out = []
    for offset, split in enumerate((train, evaluation)):
        if args.dataset == "scenes":
            captions = scene_captions(split["label"], split["background_id"], names, seed=args.seed * 7 + offset)
            split = split.add_column(args.text_column, captions)
        for column in (args.image_column, args.text_column):
            if column not in split.column_names:
                raise PretrainingError(
                    f"the {'training' if offset == 0 else 'evaluation'} split has no column {column!r}; its "
                    f"columns are {split.column_names} (set --image-column / --text-column)."
                )
        check_captions(split[args.text_column], f"the {'training' if offset == 0 else 'evaluation'} split")
        out.append(split)
    return out[0], out[1], [readable(n) for n in names] if names else None


class _ImageText:
    """`(pixel_values, caption)` pairs; augmentation depends on (seed, epoch, index) only."""

    def __init__(self, split, transform, image_column: str, text_column: str):
        self.split, self.transform = split, transform
        self.image_column, self.text_column = image_column, text_column
        self.epoch = 0

    def __len__(self):
        return len(self.split)

    def __getitem__(self, index):
        row = self.split[index]
        return self.transform(row[self.image_column], index, self.epoch), row[self.text_column]


def train_clip(args: CLIPTrainingArguments) -> dict:
    """Run the training `args` describe; returns the final evaluation (or where a --stop-after run stopped).
    The output folder is claimed only once the inputs are read (an --overwrite'n run comes back on failure)."""
    from lastvit.training.pretraining import output_folder

    with output_folder(args) as output:
        return _train_clip(args, output)


def _train_clip(args: CLIPTrainingArguments, output) -> dict:
    import torch

    from lastvit.clip.contrastive import ContrastiveEmbedder
    from lastvit.data.loading import ImageTransform, build_processor
    from lastvit.training.pretraining import PretrainingLoop, claim, start_run
    from lastvit.training.schedule import lr_lambda

    accelerator = start_run(
        args, fsdp="LastViT-CLIP cannot run under FSDP: fully_shard cannot shard its scalar logit_scale."
    )
    model, tokenizer, train_split, eval_split, class_names = _model_and_splits(args)
    processor = build_processor(model.vision_model, args.model_name_or_path or args.vision_model_name_or_path)
    size = model.config.vision_config.image_size_hw[0]
    common = {"size": size, "mean": tuple(processor.image_mean), "std": tuple(processor.image_std), "seed": args.seed}
    data, sampler, loader = _pair_loader(
        args, train_split, tokenizer, ImageTransform(train=True, crop_scale=(args.crop_scale_min, 1.0), **common)
    )
    embedder = ContrastiveEmbedder(model)
    optimizer = torch.optim.AdamW(embedder.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    embedder, optimizer, loader = accelerator.prepare(embedder, optimizer, loader)
    model = accelerator.unwrap_model(embedder).clip
    total_steps = max(1, math.ceil(args.epochs * len(loader)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total_steps, args.warmup_ratio, 0.01))
    accelerator.register_for_checkpointing(scheduler)

    steps = PretrainingLoop(accelerator, args, total_steps, "clip", resume=claim(accelerator, output, args))
    train_step = _clip_step(args, accelerator, steps, embedder, optimizer, scheduler)
    embedder.train()
    results = steps.train(loader, train_step, epoch_aware=(sampler, data))
    if "stopped_at_step" in results:
        return results
    if accelerator.is_main_process:
        if class_names:
            results.update(
                evaluate_split(model, tokenizer, eval_split, class_names, ImageTransform(train=False, **common))
            )
        write_clip_folder(args, model, tokenizer, processor, results)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return results


def _model_and_splits(args: CLIPTrainingArguments):
    """``(model, tokenizer, train, eval, class names or None)``: a LastViT-CLIP folder with its
    tokenizer, or a new model over a word tokenizer trained on the training captions."""
    from lastvit.clip.captions import train_word_tokenizer

    if args.model_name_or_path:
        model, tokenizer = load_clip_folder(args)
        train_split, eval_split, class_names = captioned_splits(
            args, args.image_size or model.config.vision_config.image_size_hw[0]
        )
    else:
        train_split, eval_split, class_names = captioned_splits(args)
        tokenizer = train_word_tokenizer(train_split[args.text_column], args.max_text_length)
        model = build_model(args, tokenizer)
    return model, tokenizer, train_split, eval_split, class_names


def _pair_loader(args: CLIPTrainingArguments, train_split, tokenizer, transform):
    """``(pairs, sampler, loader)``: the training split as (augmented image, tokenized caption)
    batches in the seed's order, whole batches only."""
    import torch

    from lastvit.clip.captions import tokenize
    from lastvit.data.loading import EpochSampler

    data = _ImageText(train_split, transform, args.image_column, args.text_column)
    sampler = EpochSampler(len(data), args.seed, shuffle=True)

    def collate(examples):
        pixels = torch.stack([pixel for pixel, _ in examples])
        return {"pixel_values": pixels, **tokenize(tokenizer, [text for _, text in examples], args.max_text_length)}

    loader = torch.utils.data.DataLoader(
        data,
        batch_size=args.batch_size,
        sampler=sampler,
        drop_last=True,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(args.seed),
    )
    if len(loader) == 0:
        raise PretrainingError(f"the training split has {len(data)} pairs, fewer than one batch of {args.batch_size}.")
    return data, sampler, loader


def _clip_step(args: CLIPTrainingArguments, accelerator, steps, embedder, optimizer, scheduler):
    """One training step: the contrastive (or, with a logit bias, SigLIP's sigmoid) loss against the
    pairs of every process, clipping, the optimiser and lr steps, the temperature clamped at 100."""
    import torch

    from lastvit.clip.contrastive import contrastive_loss, sigmoid_loss
    from lastvit.training.pretraining import mean_over_processes

    model = accelerator.unwrap_model(embedder).clip

    def train_step(batch) -> float:
        embeds = embedder(batch["pixel_values"], batch["input_ids"], batch.get("attention_mask"))
        loss = sigmoid_loss(*embeds) if len(embeds) == 4 else contrastive_loss(*embeds)
        if not torch.isfinite(loss):
            raise PretrainingError(
                f"the loss became {loss.item()} at step {steps.state['step'] + 1}; lower the learning rate."
            )
        accelerator.backward(loss)
        if args.max_grad_norm:
            accelerator.clip_grad_norm_(embedder.parameters(), args.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
        if len(embeds) == 3:  # CLIP clamps the learned temperature at 100 (SigLIP's sigmoid loss does not)
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
        return mean_over_processes(accelerator, loss)

    return train_step


def evaluate_split(model, tokenizer, split, class_names, transform, background_names=None) -> dict:
    """Zero-shot top-1 and segmentation mIoU of `model` on a scenes-like split (masks optional)."""
    from lastvit.clip.captions import PROMPTS, readable
    from lastvit.measure.zero_shot import evaluate_zero_shot
    from lastvit.training.pretraining import eval_arrays

    pixels, labels, _, masks = eval_arrays(split, transform)
    if labels is None:
        return {}
    if background_names is None and "background_id" in split.column_names:
        background_names = sorted({readable(b) for b in split["background_id"]})
    backgrounds = [f"a photo of {name}." for name in background_names or ()]
    return evaluate_zero_shot(model, tokenizer, pixels, labels, masks, class_names, PROMPTS[:1], backgrounds)


def write_clip_folder(args, model, tokenizer, processor, results: dict) -> None:
    """Model (with remote code), tokenizer, image processor, card, results and `image_tower/`, staged
    and moved in whole beside `checkpoints/`."""
    from lastvit.files import write_folder
    from lastvit.training.pretraining import move_into

    def write(folder: Path):
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        processor.save_pretrained(folder)
        model.save_image_tower(folder / "image_tower")
        processor.save_pretrained(folder / "image_tower")
        (folder / "eval_results.json").write_text(json.dumps(results, indent=2))
        clip_model_card(args, model, results).save(folder / "README.md")

    staging = args.output_dir / ".final"
    write_folder(staging, write)
    move_into(staging, args.output_dir)


def clip_model_card(args, model, results: dict):
    from huggingface_hub import EvalResult

    from lastvit.cards.model_card import describe_config, render_model_card
    from lastvit.cards.template import clip_usage_text

    text = model.config.text_config
    tokenizer = (
        f"the tokenizer of {args.model_name_or_path}, where both towers started"
        if args.model_name_or_path
        else "a word-level tokenizer trained on the training captions"
    )
    details = describe_config(model.config.vision_config) + [
        (
            f"Text tower: transformers' {'SigLIP' if model.config.text_tower == 'siglip' else 'CLIP'} text "
            f"transformer, width {text.hidden_size}, {text.num_hidden_layers} blocks, vocabulary {text.vocab_size} "
            f"({tokenizer})."
        ),
        (
            f"Joint space: {model.config.projection_dim} dimensions, learned temperature (logit scale "
            f"{model.logit_scale.exp().item():.2f} at the end)."
        ),
    ]
    measured = [  # (task, metric type, metric name, value) of what this run measured
        ("zero-shot-image-classification", "accuracy", "zero-shot top-1", results.get("zero_shot_top1")),
        (
            "image-segmentation",
            "mean_iou",
            "zero-shot segmentation mIoU (objects only)",
            results.get("segmentation_ignore_background", {}).get("miou"),
        ),
    ]
    evals = [
        EvalResult(
            task_type=task,
            dataset_type=args.dataset,
            dataset_name=args.dataset,
            metric_type=metric_type,
            metric_name=name,
            metric_value=float(value),
        )
        for task, metric_type, name, value in measured
        if value is not None
    ]
    usage = clip_usage_text(
        ("bird", "vehicle"),
        "`image_tower/` is the image tower alone, a LastViT folder (`image_embeds` = the CLIP image embedding).",
    )
    loss = (
        "SigLIP's pairwise sigmoid loss with a learned temperature and bias"
        if model.logit_bias is not None
        else "symmetric InfoNCE with a learned temperature"
    )
    image = "projected global feature" if model.config.image_projection else "global feature"
    summary = (
        f"A LaSt-ViT image-text (CLIP) model trained with `lastvit-train-clip`: {loss} between the LastViT image "
        f"tower's {image} and a {'SigLIP' if model.config.text_tower == 'siglip' else 'CLIP'} text tower."
    )
    return render_model_card(
        title=f"LastViT-CLIP ({model.config.vision_config.pooling} readout)",
        summary=summary,
        details=details,
        command=to_argv(args, "lastvit-train-clip"),
        sections=[
            ("Results of this run", "```json\n" + json.dumps(results, indent=2)[:4000] + "\n```"),
            ("How to use", usage),
            (
                "Limitations",
                (
                    "Trained on the data named in the command only; a toy-scale model unless stated."
                    + (
                        ""
                        if args.model_name_or_path
                        else " The tokenizer knows only the training captions' words (others become [UNK])."
                    )
                ),
            ),
            ("Training arguments", "```json\n" + json.dumps(asdict(args), default=str, indent=2) + "\n```"),
        ],
        pipeline_tag="zero-shot-image-classification",
        license="mit",
        eval_results=evals or None,
        model_name="lastvit-clip" if evals else None,
        tags=["clip", "zero-shot-image-classification"],
    )
