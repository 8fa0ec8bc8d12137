"""lastvit-train: supervised image classification with Accelerate, from scratch or from a checkpoint.

The same script runs on one CPU, one GPU (bf16/fp16) or many GPUs/nodes (DDP, FSDP): device
placement, mixed precision and distribution come from `accelerate launch` configs
(`training_scripts/accelerate_configs/`), never from code branches. The default recipe is the
paper's: AdamW lr 1e-3, weight decay 0.3 (all parameters), betas (0.9, 0.95), 1% linear warm-up
from 0.1x, then cosine to 0.001x; RandomResizedCrop + flip for training, resize + centre crop
for evaluation.

    lastvit-train --dataset scenes --preset tiny --pooling lazystrike --top-k-ratio 0.25 --output-dir runs/tiny
    accelerate launch --config_file training_scripts/accelerate_configs/multi_gpu.yaml \\
        -m training_scripts.train --dataset imagefolder --data-dir data/ --preset base --output-dir runs/base

The output folder is a complete checkpoint: `AutoModelForImageClassification.from_pretrained(dir,
trust_remote_code=True)` loads it. `checkpoints/last/` (resume state) and `best/` sit inside it.
"""

import argparse
import json
import math
import os
import shutil
import sys
from pathlib import Path

import torch

from lastvit.data.loading import (
    SCENES,
    DataError,
    EpochSampler,
    ImageTransform,
    TransformedSplit,
    build_processor,
    check_columns,
    check_labels,
    collate,
    label_names,
    load_splits,
)
from lastvit.files import swap_in, write_folder

PRESETS = {
    # name: (hidden, layers, heads, mlp, image, patch); micro and tiny are sized for 64 px scenes on a CPU
    "micro": (128, 4, 4, 512, 64, 8),
    "tiny": (192, 4, 3, 768, 64, 8),
    "small": (384, 12, 6, 1536, 224, 16),
    "base": (768, 12, 12, 3072, 224, 16),
}
STATE_FILE = "trainer_state.json"


class TrainingStopped(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the message says where the last good state is."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lastvit-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    data = p.add_argument_group("data")
    data.add_argument("--dataset", default=SCENES,
                      help="'scenes' (built-in, offline), 'imagefolder' (with --data-dir), a save_to_disk folder, "
                           "or a Hub dataset name (default: scenes)")
    data.add_argument("--data-dir", help="folder of class subfolders for --dataset imagefolder")
    data.add_argument("--train-split", default="train", help="training split name (default: train)")
    data.add_argument("--eval-split", help="evaluation split (default: validation, else test)")
    data.add_argument("--image-column", default="image", help="column holding the images (default: image)")
    data.add_argument("--label-column", default="label", help="column holding class indices (default: label)")
    data.add_argument("--scenes-train", type=int, default=4000, help="scenes: training images (default: 4000)")
    data.add_argument("--scenes-test", type=int, default=1000, help="scenes: test images (default: 1000)")
    data.add_argument("--scenes-clutter", type=int, default=0, help="scenes: clutter fragments per image")
    data.add_argument("--on-bad-image", choices=("stop", "skip"), default="stop",
                      help="an unreadable image stops the run naming the file, or is skipped and counted")
    data.add_argument("--crop-scale-min", type=float, default=0.08,
                      help="smallest area fraction of RandomResizedCrop (default: 0.08)")
    data.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes (default: 0)")

    model = p.add_argument_group("model")
    model.add_argument("--model-name-or-path", help="start from a LastViT checkpoint folder (or Hub id)")
    model.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="architecture when training from scratch")
    model.add_argument("--image-size", type=int, help="input size (default: the preset's or checkpoint's)")
    model.add_argument("--patch-size", type=int, help="patch size (default: the preset's)")
    model.add_argument("--pooling", choices=("cls", "mean", "max", "lazystrike"),
                       help="global readout (default: lazystrike from scratch; the checkpoint's own otherwise)")
    model.add_argument("--top-k", type=int, help="LazyStrike K as a count (default: 1, the released setting)")
    model.add_argument("--top-k-ratio", type=float, help="LazyStrike K as a fraction of the patches, in (0, 1]")
    model.add_argument("--registers", type=int, default=0, help="number of register tokens (default: 0)")
    model.add_argument("--drop-path", type=float, default=0.0, help="stochastic depth rate (default: 0)")
    model.add_argument("--attn-implementation", default="sdpa", help="sdpa (default), eager, flash_attention_2, ...")

    opt = p.add_argument_group("optimisation (the paper's recipe by default)")
    opt.add_argument("--epochs", type=float, default=10, help="passes over the training set (default: 10)")
    opt.add_argument("--batch-size", type=int, default=64, help="per-device batch size (default: 64)")
    opt.add_argument("--gradient-accumulation-steps", type=int, default=1)
    opt.add_argument("--learning-rate", type=float, default=1e-3)
    opt.add_argument("--weight-decay", type=float, default=0.3)
    opt.add_argument("--betas", type=float, nargs=2, default=(0.9, 0.95))
    opt.add_argument("--warmup-ratio", type=float, default=0.01, help="share of steps in linear warm-up (default: 0.01)")
    opt.add_argument("--min-lr-ratio", type=float, default=0.001, help="cosine floor as a fraction of the lr")
    opt.add_argument("--max-grad-norm", type=float, default=None, help="clip gradients to this norm (default: off)")
    opt.add_argument("--seed", type=int, default=0)

    run = p.add_argument_group("run")
    run.add_argument("--output-dir", type=Path, required=True, help="the checkpoint folder this run writes")
    run.add_argument("--overwrite", action="store_true", help="replace an output folder that holds another run")
    run.add_argument("--resume", action="store_true", help="continue the run in --output-dir from its last checkpoint")
    run.add_argument("--eval-every", type=int, default=0, help="evaluate every N optimiser steps (0: each epoch)")
    run.add_argument("--save-every", type=int, default=0, help="save a resume checkpoint every N steps (0: each epoch)")
    run.add_argument("--stop-after", type=int, default=None,
                     help="stop after N optimiser steps of this invocation without a final save, as a killed job "
                          "would (for time-boxed jobs; continue with --resume)")
    run.add_argument("--report-to", choices=("none", "tensorboard", "wandb", "all"), default="none",
                     help="experiment tracker (default: none)")
    run.add_argument("--push-to-hub", metavar="REPO_ID", help="publish the final folder to this Hub repository")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def build_model(args, labels: list[str]):
    from transformers import AutoModelForImageClassification

    from modeling_lastvit import LastViTConfig, LastViTForImageClassification

    id2label = dict(enumerate(labels))
    label2id = {name: i for i, name in id2label.items()}
    pooling = {} if args.pooling is None else dict(pooling=args.pooling)
    if args.top_k_ratio is not None:
        pooling.update(lazystrike_top_k=None, lazystrike_top_k_ratio=args.top_k_ratio)
    elif args.top_k is not None:
        pooling.update(lazystrike_top_k=args.top_k, lazystrike_top_k_ratio=None)
    if args.model_name_or_path:
        return AutoModelForImageClassification.from_pretrained(
            args.model_name_or_path,
            num_labels=len(labels),
            id2label=id2label,
            label2id=label2id,
            ignore_mismatched_sizes=True,
            attn_implementation=args.attn_implementation,
            trust_remote_code=True,
            **pooling,
        )
    hidden, layers, heads, mlp, image, patch = PRESETS[args.preset]
    pooling.setdefault("pooling", "lazystrike")
    config = LastViTConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=mlp,
        image_size=args.image_size or image,
        patch_size=args.patch_size or patch,
        num_register_tokens=args.registers,
        drop_path_rate=args.drop_path,
        num_labels=len(labels),
        id2label=id2label,
        label2id=label2id,
        attn_implementation=args.attn_implementation,
        **pooling,
    )
    return LastViTForImageClassification(config)


def lr_lambda(total_steps: int, warmup_ratio: float, min_lr_ratio: float):
    """1% linear warm-up from 0.1x, then cosine from 1x to `min_lr_ratio`x (the paper's schedule)."""
    warmup = max(1, round(total_steps * warmup_ratio)) if warmup_ratio > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return 0.1 + 0.9 * step / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def prepare_output_dir(args) -> None:
    out = args.output_dir
    has_files = out.exists() and any(out.iterdir())
    if args.resume:
        if not (out / "checkpoints" / "last" / STATE_FILE).exists():
            raise DataError(f"--resume: {out} holds no resumable checkpoint (checkpoints/last); start without --resume.")
    elif has_files and not args.overwrite:
        raise DataError(
            f"{out} already holds files (another run?); pass --resume to continue it, --overwrite to replace it, "
            "or choose another --output-dir."
        )
    elif has_files:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


@torch.no_grad()
def evaluate(model, loader, accelerator, num_labels: int) -> dict:
    model.eval()
    correct1 = correct5 = seen = 0
    k = min(5, num_labels)
    for batch in loader:
        if "pixel_values" not in batch:
            continue
        logits = model(pixel_values=batch["pixel_values"]).logits
        top, labels = accelerator.gather_for_metrics((logits.topk(k, dim=-1).indices, batch["labels"]))
        hits = top == labels[:, None]
        correct1 += hits[:, 0].sum().item()
        correct5 += hits.any(dim=1).sum().item()
        seen += labels.numel()
    model.train()
    return {"top1": correct1 / max(seen, 1), f"top{k}": correct5 / max(seen, 1), "eval_examples": seen}


def save_final(model, save_model, args, accelerator, results: dict) -> None:
    """Write the final model (or PEFT adapter), processor, results and card at the top of the
    output folder (beside checkpoints/ and best/), each file moved in only once complete. A PEFT
    run with `--merge` also writes the merged full model to `merged/`."""
    from .publish import write_model_card

    out = args.output_dir
    unwrapped = accelerator.unwrap_model(model)
    is_adapter = hasattr(unwrapped, "peft_config")
    config = (unwrapped.get_base_model() if is_adapter else unwrapped).config.to_dict()
    adapter = unwrapped.peft_config["default"].to_dict() if is_adapter else None
    card = dict(results=results, dataset=args.dataset, training_args=vars(args))
    staging = out / ".final.staging"
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
    accelerator.wait_for_everyone()
    save_model(staging)
    if accelerator.is_main_process:
        (staging / "eval_results.json").write_text(json.dumps(results, indent=2))
        write_model_card(staging, config, adapter=adapter, **card)
        for path in staging.iterdir():
            os.replace(path, out / path.name)
        staging.rmdir()
        if is_adapter and getattr(args, "merge", False):
            merged = unwrapped.merge_and_unload()

            def write_merged(folder: Path):
                merged.save_pretrained(folder)
                build_processor(merged).save_pretrained(folder)
                write_model_card(folder, merged.config.to_dict(), **card)

            write_folder(out / "merged", write_merged)


def train(args, adapt_model=None) -> dict:
    """Run the training described by `args`; `adapt_model` may wrap the model (e.g. with PEFT)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=None if args.report_to == "none" else args.report_to,
        project_dir=str(args.output_dir),
    )
    if accelerator.is_main_process:
        prepare_output_dir(args)
    accelerator.wait_for_everyone()
    set_seed(args.seed)

    scenes_kwargs = dict(num_train=args.scenes_train, num_test=args.scenes_test, seed=args.seed,
                         clutter=args.scenes_clutter)
    train_split, eval_split = load_splits(args.dataset, args.train_split, args.eval_split, args.data_dir, scenes_kwargs)
    check_columns(train_split, args.image_column, args.label_column, "training")
    check_columns(eval_split, args.image_column, args.label_column, "evaluation")
    labels = label_names(train_split, args.label_column)
    model = build_model(args, labels)
    num_labels = model.config.num_labels
    processor = build_processor(model, args.model_name_or_path)
    if adapt_model is not None:
        model = adapt_model(model)
    check_labels(train_split, args.label_column, num_labels, "training")
    check_labels(eval_split, args.label_column, num_labels, "evaluation")

    size = processor.crop_size["height"]
    transform = dict(size=size, mean=tuple(processor.image_mean), std=tuple(processor.image_std), seed=args.seed)
    train_data = TransformedSplit(
        train_split, ImageTransform(train=True, crop_scale=(args.crop_scale_min, 1.0), **transform),
        args.image_column, args.label_column, skip_bad=args.on_bad_image == "skip",
    )
    eval_data = TransformedSplit(
        eval_split, ImageTransform(train=False, **transform), args.image_column, args.label_column,
        skip_bad=args.on_bad_image == "skip",
    )
    sampler = EpochSampler(len(train_data), args.seed, shuffle=True)
    # A private generator: creating a DataLoader iterator must not draw from the global RNG,
    # or a resumed run's dropout masks would drift from the uninterrupted run's.
    loader_kwargs = dict(batch_size=args.batch_size, collate_fn=collate, num_workers=args.num_workers,
                         generator=torch.Generator().manual_seed(args.seed))
    train_loader = torch.utils.data.DataLoader(train_data, sampler=sampler, drop_last=True, **loader_kwargs)
    eval_loader = torch.utils.data.DataLoader(eval_data, **loader_kwargs)
    if len(train_loader) == 0:
        raise DataError(f"the training split has {len(train_data)} examples, fewer than one batch of {args.batch_size}.")

    optimizer = torch.optim.AdamW(
        model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay, betas=tuple(args.betas)
    )
    model, optimizer, train_loader, eval_loader = accelerator.prepare(model, optimizer, train_loader, eval_loader)
    steps_per_epoch = math.ceil(len(train_loader) / args.gradient_accumulation_steps)
    total_steps = max(1, math.ceil(args.epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total_steps, args.warmup_ratio, args.min_lr_ratio))
    accelerator.register_for_checkpointing(scheduler)

    state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "best_top1": None, "best_step": None, "skipped_images": 0}
    last_dir = args.output_dir / "checkpoints" / "last"
    if args.resume:
        accelerator.load_state(str(last_dir))
        state = json.loads((last_dir / STATE_FILE).read_text())
        accelerator.print(f"resuming from step {state['step']} (epoch {state['epoch']}, batch {state['batch_in_epoch']})")

    if args.report_to != "none":
        accelerator.init_trackers("lastvit", config={k: str(v) for k, v in vars(args).items()})

    def save_checkpoint():
        """Every process writes its part of the resume state into one staging folder; the main
        process then swaps it in for checkpoints/last."""
        staging = last_dir.with_name(".last.staging")
        if accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(staging))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            (staging / STATE_FILE).write_text(json.dumps(state))
            swap_in(staging, last_dir)
        accelerator.wait_for_everyone()

    def save_model(folder: Path):
        """Save the (unwrapped, gathered under FSDP) model and processor as a loadable folder."""
        state_dict = accelerator.get_state_dict(model)
        if accelerator.is_main_process:
            accelerator.unwrap_model(model).save_pretrained(folder, state_dict=state_dict)
            processor.save_pretrained(folder)

    def run_eval():
        metrics = evaluate(model, eval_loader, accelerator, num_labels)
        accelerator.print(f"step {state['step']}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        if args.report_to != "none":
            accelerator.log({f"eval/{k}": v for k, v in metrics.items()}, step=state["step"])
        state["evaluated_step"] = state["step"]
        if state["best_top1"] is None or metrics["top1"] > state["best_top1"]:
            state.update(best_top1=metrics["top1"], best_step=state["step"])
            if accelerator.is_main_process:
                write_folder(args.output_dir / "best", save_model)
            else:
                save_model(None)  # joins the collective state-dict gather
        return metrics

    model.train()
    steps_this_run = 0
    progress = tqdm(total=total_steps, initial=state["step"], desc="training",
                    disable=args.no_progress or not accelerator.is_local_main_process)
    metrics = None
    while state["step"] < total_steps:
        sampler.epoch = train_data.epoch = state["epoch"]
        epoch_loader = accelerator.skip_first_batches(train_loader, state["batch_in_epoch"]) \
            if state["batch_in_epoch"] else train_loader
        for batch in epoch_loader:
            state["batch_in_epoch"] += 1
            state["skipped_images"] += int(batch["num_skipped"])
            if "pixel_values" not in batch:
                continue
            with accelerator.accumulate(model):
                loss = model(pixel_values=batch["pixel_values"], labels=batch["labels"]).loss
                if not torch.isfinite(accelerator.gather(loss.detach())).all():
                    raise TrainingStopped(
                        f"the loss became {loss.item()} at step {state['step'] + 1} (epoch {state['epoch']}); stopped. "
                        f"The last good checkpoint is in {last_dir} (step of the last save); lower --learning-rate, "
                        "set --max-grad-norm, or check the data, then continue with --resume."
                    )
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            state["step"] += 1
            steps_this_run += 1
            progress.update(1)
            progress.set_postfix(loss=f"{loss.item():.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            if args.report_to != "none":
                accelerator.log({"train/loss": loss.item(), "train/lr": scheduler.get_last_lr()[0]}, step=state["step"])
            if args.eval_every and state["step"] % args.eval_every == 0:
                metrics = run_eval()
            if args.save_every and state["step"] % args.save_every == 0:
                save_checkpoint()
            if args.stop_after is not None and steps_this_run >= args.stop_after:
                progress.close()
                accelerator.print(f"stopped after {steps_this_run} steps (--stop-after); continue with --resume")
                accelerator.end_training()
                return {"stopped_at_step": state["step"]}
            if state["step"] >= total_steps:
                break
        else:
            state["epoch"] += 1
            state["batch_in_epoch"] = 0
            if not args.eval_every:
                metrics = run_eval()
            if not args.save_every:
                save_checkpoint()
            continue
        break
    progress.close()

    if metrics is None or state.get("evaluated_step") != state["step"]:
        metrics = run_eval()
    results = {**metrics, "step": state["step"], "best_top1": state["best_top1"], "best_step": state["best_step"],
               "skipped_images": state["skipped_images"]}
    save_checkpoint()
    save_final(model, save_model, args, accelerator, results)
    if accelerator.is_main_process:
        if state["skipped_images"]:
            print(f"skipped {state['skipped_images']} unreadable images (--on-bad-image skip)")
        if args.push_to_hub:
            from .publish import publish

            publish(args.output_dir, args.push_to_hub)
    accelerator.end_training()
    return results


def run(args, adapt_model=None) -> int:
    """Train, print the results as JSON, and turn known failures into a one-line error and exit code 1."""
    if args.top_k is not None and args.top_k_ratio is not None:
        print("error: pass only one of --top-k and --top-k-ratio", file=sys.stderr)
        return 2
    try:
        results = train(args, adapt_model)
    except (DataError, TrainingStopped) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(json.dumps(results, indent=2))
    return 0


def main(argv=None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
