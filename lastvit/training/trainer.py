"""The supervised training loop, on Accelerate: one CPU, one GPU (bf16/fp16) or many GPUs/nodes
(DDP, FSDP), with placement, precision and distribution from `accelerate launch` configs, never code
branches. A run resumed from `checkpoints/last` ends with the weights of the uninterrupted run
(the data order, augmentation and RNG states are functions of the seed, epoch and step).

The output folder is a complete checkpoint (or a PEFT adapter with its labels), its processor,
`eval_results.json` and a model card; `checkpoints/last/` (resume state) and `best/` sit inside it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from pathlib import Path

import torch

from lastvit.arguments import to_argv
from lastvit.data.loading import (
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
from lastvit.errors import LastViTUserError
from lastvit.files import check_model_path, load_pretrained, model_source, write_folder
from lastvit.measure.metrics.accuracy import top_k_hits

from . import loop
from .config import ConfigError, TrainConfig
from .loop import STATE_FILE, StepLoop  # noqa: F401 (STATE_FILE: its name here before `loop`)
from .presets import preset_config
from .schedule import lr_lambda


class TrainingStopped(LastViTUserError):
    """Training cannot go on (e.g. a non-finite loss); the message says where the last good state is."""


def build_model(config: TrainConfig, labels: list[str]):
    """A preset from scratch, or the checkpoint `config.model_name_or_path` with a classifier for `labels`."""
    from transformers import AutoModelForImageClassification

    from modeling_lastvit import LastViTForImageClassification

    id2label = dict(enumerate(labels))
    label2id = {name: i for i, name in id2label.items()}
    pooling = {} if config.pooling is None else {"pooling": config.pooling}
    if config.top_k_ratio is not None:
        pooling.update(lazystrike_top_k=None, lazystrike_top_k_ratio=config.top_k_ratio)
    elif config.top_k is not None:
        pooling.update(lazystrike_top_k=config.top_k, lazystrike_top_k_ratio=None)
    if config.model_name_or_path:
        from transformers import AutoConfig

        source = model_source(config.model_name_or_path)
        base_config = load_pretrained(AutoConfig, source, trust_remote_code=config.trust_remote_code)
        model = load_pretrained(
            AutoModelForImageClassification,
            source,
            trust_remote_code=config.trust_remote_code,
            num_labels=len(labels),
            id2label=id2label,
            label2id=label2id,
            ignore_mismatched_sizes=True,
            attn_implementation=config.attn_implementation,
            **pooling,
        )
        if getattr(base_config, "num_labels", 0) == len(labels):
            match_classifier(model, getattr(base_config, "id2label", {}), labels)
        return model
    pooling.setdefault("pooling", "lazystrike")
    model_config = preset_config(
        config.preset,
        config.image_size,
        config.patch_size,
        num_register_tokens=config.registers,
        drop_path_rate=config.drop_path,
        num_labels=len(labels),
        id2label=id2label,
        label2id=label2id,
        attn_implementation=config.attn_implementation,
        **pooling,
    )
    return LastViTForImageClassification(model_config)


def match_classifier(model, base_id2label: dict, labels: list[str]) -> None:
    """Fine-tuning a classifier on data with as many classes: its rows follow the data's class names
    (`lastvit.data.loading.match_labels`): the same names in another order are re-ordered, other names get
    a fresh classifier (the base's rows meant other classes), each said in one line."""
    import torch

    from lastvit.data.loading import match_labels

    try:
        mapping = match_labels(labels, base_id2label)
    except DataError:
        print(f"the data's classes {labels} are not the base's: the classifier starts afresh")
        with torch.no_grad():
            torch.nn.init.trunc_normal_(model.classifier.weight, std=model.config.initializer_range)
            torch.nn.init.zeros_(model.classifier.bias)
        return
    if mapping is not None:
        with torch.no_grad():
            model.classifier.weight.copy_(model.classifier.weight[mapping].clone())
            model.classifier.bias.copy_(model.classifier.bias[mapping].clone())


def load_data(config: TrainConfig):
    """``(train, eval)`` splits from `config.dataset`: a name or path, or an in-memory DatasetDict."""
    scenes_kwargs = {
        "num_train": config.scenes_train,
        "num_test": config.scenes_test,
        "seed": config.seed,
        "clutter": config.scenes_clutter,
    }
    return load_splits(config.dataset, config.train_split, config.eval_split, config.data_dir, scenes_kwargs)


@torch.no_grad()
def evaluate(model, loader, accelerator, num_labels: int) -> dict:
    model.eval()
    correct1 = correct5 = seen = 0
    k = min(5, num_labels)
    for batch in loader:
        if "pixel_values" not in batch:
            continue
        logits = model(pixel_values=batch["pixel_values"]).logits
        hits = accelerator.gather_for_metrics(top_k_hits(logits, batch["labels"], k))
        correct1 += hits[:, 0].sum().item()
        correct5 += hits.any(dim=1).sum().item()
        seen += len(hits)
    model.train()
    return {"top1": correct1 / max(seen, 1), f"top{k}": correct5 / max(seen, 1), "eval_examples": seen}


def command_line(config: TrainConfig, adapter=None) -> str:
    """The command that reproduces this run (for its card)."""
    skip = ("overwrite", "resume", "stop_after", "push_to_hub", "progress", "report_to", "num_workers")
    named = dataclasses.replace(config, dataset=config.dataset_name)
    if adapter is None:
        return to_argv(named, "lastvit-train", skip=skip)
    return to_argv(named, "lastvit-finetune-peft", skip=skip) + to_argv(adapter, "", skip=("merge",))


def card_facts(config: TrainConfig, adapter, results: dict) -> dict:
    """What a run's cards say besides the model: the command, data, results and base."""
    return {
        "command": command_line(config, adapter),
        "dataset": config.dataset_name,
        "results": results,
        "base": config.model_name_or_path and model_source(config.model_name_or_path),
    }


def write_card(folder: Path, name_folder: Path, unwrapped, config: TrainConfig, adapter, results: dict) -> None:
    """The results, the card (titled after `name_folder`) and, for an adapter, its labels, into `folder`
    beside a saved model: the final folder and `best/` alike (PEFT's own README template is replaced)."""
    from lastvit.cards.trained import trained_model_card

    is_adapter = hasattr(unwrapped, "peft_config")
    model_config = (unwrapped.get_base_model() if is_adapter else unwrapped).config
    (folder / "eval_results.json").write_text(json.dumps(results, indent=2))
    peft_dict = unwrapped.peft_config["default"].to_dict() if is_adapter else None
    if is_adapter:
        from .peft import save_labels

        save_labels(folder, model_config)
    card = card_facts(config, adapter, results)
    trained_model_card(name_folder, model_config, adapter=peft_dict, **card).save(folder / "README.md")


def save_final(model, save_model, config: TrainConfig, accelerator, results: dict, adapter=None) -> None:
    """Write the final model (or PEFT adapter with its labels), processor, results and card at the top
    of the output folder (beside checkpoints/ and best/), each file moved in only once complete. A PEFT
    run with `merge` also writes the merged full model to `merged/`."""
    from lastvit.cards.trained import trained_model_card

    out = config.output_dir
    unwrapped = accelerator.unwrap_model(model)
    is_adapter = hasattr(unwrapped, "peft_config")
    card = card_facts(config, adapter, results)
    staging = out / ".final.staging"
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
    accelerator.wait_for_everyone()
    save_model(staging)
    if accelerator.is_main_process:
        write_card(staging, out, unwrapped, config, adapter, results)
        for path in staging.iterdir():
            os.replace(path, out / path.name)
        staging.rmdir()
        if is_adapter and adapter is not None and adapter.merge:
            merged = unwrapped.merge_and_unload()

            def write_merged(folder: Path):
                merged.save_pretrained(folder)
                build_processor(merged).save_pretrained(folder)
                trained_model_card(out / "merged", merged.config, merged=True, **card).save(folder / "README.md")

            write_folder(out / "merged", write_merged)


def train(config: TrainConfig, adapter=None) -> dict:
    """Run the training `config` describes and return its results (the last evaluation, steps, best
    top-1). `adapter` (`lastvit.training.peft.PeftArguments`) trains a PEFT adapter on the
    `model_name_or_path` base instead of the full model. Every input (flags, model, data, a resumed
    run's settings) is checked before the output folder is touched; with ``overwrite`` the old run
    is put back unchanged if this one fails."""
    with loop.OutputFolder(config.output_dir, config.resume, config.overwrite, DataError) as output:
        return _train(config, adapter, output)


def run_settings(config: TrainConfig, adapter=None) -> dict:
    """What a resumed run must share with the checkpointed one (`loop.check_resume_settings`)."""
    settings = loop.run_settings(config, loop.HARMLESS_SETTINGS)
    if adapter is not None:
        settings.update({f"peft_{k}": v for k, v in loop.run_settings(adapter, set()).items()})
    return settings


def check_inputs(config: TrainConfig, adapter=None) -> None:
    """The checks that need no data: a PEFT adapter's base, the model path, and the Hub repo and access
    (before hours of training, not after)."""
    if adapter is not None and not config.model_name_or_path:
        raise ConfigError("a PEFT adapter needs a base: pass --model-name-or-path (a trained LastViT folder).")
    if config.model_name_or_path:
        check_model_path(config.model_name_or_path, "--model-name-or-path")
    if config.push_to_hub:
        from lastvit.hub import check_hub_access, check_repo_id

        check_repo_id(config.push_to_hub, "--push-to-hub")
        if adapter is not None and Path(config.model_name_or_path).expanduser().exists():
            raise ConfigError(
                f"--push-to-hub: this adapter's base {config.model_name_or_path} is a local folder no Hub user can "
                "load; train without --push-to-hub, then run lastvit-publish OUTPUT_DIR --repo-id ... "
                "--base-model-id ORG/BASE (the base's Hub id)."
            )
        check_hub_access(for_flag="--push-to-hub")


def build_loaders(config: TrainConfig, processor, train_split, eval_split):
    """``(train_data, sampler, train_loader, eval_loader)``: the splits under the processor's transforms,
    the training order a function of the seed and epoch."""
    size = processor.crop_size["height"]
    transform = {"size": size, "mean": tuple(processor.image_mean), "std": tuple(processor.image_std)}
    transform["seed"] = config.seed
    skip_bad = config.on_bad_image == "skip"
    train_data = TransformedSplit(
        train_split,
        ImageTransform(train=True, crop_scale=(config.crop_scale_min, 1.0), **transform),
        config.image_column,
        config.label_column,
        skip_bad=skip_bad,
    )
    eval_data = TransformedSplit(
        eval_split,
        ImageTransform(train=False, **transform),
        config.image_column,
        config.label_column,
        skip_bad=skip_bad,
    )
    sampler = EpochSampler(len(train_data), config.seed, shuffle=True)
    # A private generator: creating a DataLoader iterator must not draw from the global RNG,
    # or a resumed run's dropout masks would drift from the uninterrupted run's.
    loader_kwargs = {
        "batch_size": config.batch_size,
        "collate_fn": collate,
        "num_workers": config.num_workers,
        "generator": torch.Generator().manual_seed(config.seed),
    }
    train_loader = torch.utils.data.DataLoader(train_data, sampler=sampler, drop_last=True, **loader_kwargs)
    eval_loader = torch.utils.data.DataLoader(eval_data, **loader_kwargs)
    if len(train_loader) == 0:
        raise DataError(
            f"the training split has {len(train_data)} examples, fewer than one batch of {config.batch_size}."
        )
    return train_data, sampler, train_loader, eval_loader


def _train(config: TrainConfig, adapter, output: loop.OutputFolder) -> dict:
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from .precision import resolve_mixed_precision

    check_inputs(config, adapter)
    accelerator = Accelerator(
        mixed_precision=resolve_mixed_precision(config.mixed_precision),
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with=None if config.report_to == "none" else config.report_to,
        project_dir=str(config.output_dir),
    )
    set_seed(config.seed)

    train_split, eval_split = load_data(config)
    check_columns(train_split, config.image_column, config.label_column, "training")
    check_columns(eval_split, config.image_column, config.label_column, "evaluation")
    labels = label_names(train_split, config.label_column)
    model = build_model(config, labels)
    num_labels = model.config.num_labels
    processor = build_processor(model, config.model_name_or_path, config.trust_remote_code)
    if adapter is not None:
        from .peft import add_adapter

        model = add_adapter(model, adapter)
    check_labels(train_split, config.label_column, num_labels, "training")
    check_labels(eval_split, config.label_column, num_labels, "evaluation")
    resume = config.resume and not output.fresh_in_place
    settings = run_settings(config, adapter)
    if resume:
        loop.check_resume_settings(config.output_dir / "checkpoints" / "last", settings)
    elif config.resume:
        accelerator.print(f"{config.output_dir} holds no complete checkpoint: starting the run again from step 0")
    # every input is good: only now is the output folder claimed (an --overwrite'n run moved aside)
    if accelerator.is_main_process:
        output.take()
    accelerator.wait_for_everyone()

    train_data, sampler, train_loader, eval_loader = build_loaders(config, processor, train_split, eval_split)
    run = TrainingRun(config, adapter, accelerator, model, processor, train_loader, eval_loader, num_labels)
    return run.run(sampler, train_data, settings, resume)


class TrainingRun:
    """One run's prepared model, optimizer, schedule and loaders, and its steps: train, evaluate (keeping
    `best/`), checkpoint, and at the end save the final folder."""

    def __init__(
        self, config: TrainConfig, adapter, accelerator, model, processor, train_loader, eval_loader, num_labels
    ):
        self.config, self.adapter, self.accelerator = config, adapter, accelerator
        self.processor, self.num_labels = processor, num_labels
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay, betas=tuple(config.betas)
        )
        prepared = accelerator.prepare(model, optimizer, train_loader, eval_loader)
        self.model, self.optimizer, self.train_loader, self.eval_loader = prepared
        steps_per_epoch = math.ceil(len(self.train_loader) / config.gradient_accumulation_steps)
        self.total_steps = max(1, math.ceil(config.epochs * steps_per_epoch))
        factor = lr_lambda(self.total_steps, config.warmup_ratio, config.min_lr_ratio)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        accelerator.register_for_checkpointing(self.scheduler)
        self.last_dir = config.output_dir / "checkpoints" / "last"
        self.tracking = config.report_to != "none"
        self.metrics = None
        self.state: dict = {}

    def run(self, sampler, train_data, settings: dict, resume: bool) -> dict:
        config, accelerator = self.config, self.accelerator
        state = {
            "step": 0,
            "epoch": 0,
            "batch_in_epoch": 0,
            "best_top1": None,
            "best_step": None,
            "skipped_images": 0,
            "settings": settings,
        }
        steps = StepLoop(
            accelerator,
            self.last_dir,
            state,
            self.total_steps,
            resume=resume,
            save_every=config.save_every,
            stop_after=config.stop_after,
            progress=config.progress,
        )
        self.state = state = steps.state
        if resume:
            accelerator.print(
                f"resuming from step {state['step']} (epoch {state['epoch']}, batch {state['batch_in_epoch']})"
            )
        if self.tracking:
            fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
            accelerator.init_trackers("lastvit", config={k: str(v) for k, v in fields.items() if k != "dataset"})

        self.model.train()
        stopped = steps.run(
            self.train_loader,
            self.train_step,
            epoch_aware=(sampler, train_data),
            after_step=self.after_step,
            after_epoch=self.after_epoch,
            postfix=lambda: {"lr": f"{self.scheduler.get_last_lr()[0]:.2e}"},
        )
        if stopped:
            accelerator.print(f"stopped after {steps.steps_this_run} steps (--stop-after); continue with --resume")
            accelerator.end_training()
            return {"stopped_at_step": state["step"]}
        return self.finish(steps)

    def save_model(self, folder: Path):
        """Save the (unwrapped, gathered under FSDP) model and processor as a loadable folder."""
        state_dict = self.accelerator.get_state_dict(self.model)
        if self.accelerator.is_main_process:
            self.accelerator.unwrap_model(self.model).save_pretrained(folder, state_dict=state_dict)
            self.processor.save_pretrained(folder)

    def run_eval(self) -> dict:
        """Evaluate, log, record the history and, on a new best top-1, write `best/`."""
        accelerator, state = self.accelerator, self.state
        metrics = evaluate(self.model, self.eval_loader, accelerator, self.num_labels)
        accelerator.print(f"step {state['step']}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        if self.tracking:
            accelerator.log({f"eval/{k}": v for k, v in metrics.items()}, step=state["step"])
        state["evaluated_step"] = state["step"]
        state.setdefault("history", []).append({"step": state["step"], **metrics})
        if state["best_top1"] is None or metrics["top1"] > state["best_top1"]:
            state.update(best_top1=metrics["top1"], best_step=state["step"])
            if accelerator.is_main_process:
                self.save_best({**metrics, "step": state["step"]})
            else:
                self.save_model(None)  # joins the collective state-dict gather
        return metrics

    def save_best(self, best: dict) -> None:
        config = self.config

        def write(folder: Path):
            self.save_model(folder)
            unwrapped = self.accelerator.unwrap_model(self.model)
            write_card(folder, config.output_dir / "best", unwrapped, config, self.adapter, best)

        write_folder(config.output_dir / "best", write)

    def train_step(self, batch) -> float | None:
        accelerator, model, state = self.accelerator, self.model, self.state
        state["skipped_images"] += int(batch["num_skipped"])
        if "pixel_values" not in batch:
            return None
        with accelerator.accumulate(model):
            loss = model(pixel_values=batch["pixel_values"], labels=batch["labels"]).loss
            if not torch.isfinite(accelerator.gather(loss.detach())).all():
                raise TrainingStopped(
                    f"the loss became {loss.item()} at step {state['step'] + 1} (epoch {state['epoch']}); stopped. "
                    f"The last good checkpoint is in {self.last_dir} (step of the last save); lower --learning-rate, "
                    "set --max-grad-norm, or check the data, then continue with --resume."
                )
            accelerator.backward(loss)
            if accelerator.sync_gradients and self.config.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), self.config.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad()
        if not accelerator.sync_gradients:
            return None
        self.scheduler.step()
        return loss.item()

    def after_step(self, loss: float) -> None:
        step = self.state["step"]
        if self.tracking:
            self.accelerator.log({"train/loss": loss, "train/lr": self.scheduler.get_last_lr()[0]}, step=step)
        if self.config.eval_every and step % self.config.eval_every == 0:
            self.metrics = self.run_eval()

    def after_epoch(self) -> None:
        if not self.config.eval_every:
            self.metrics = self.run_eval()

    def finish(self, steps: StepLoop) -> dict:
        """The last evaluation (unless the last step had one), the resume checkpoint, the final folder and,
        with --push-to-hub, its upload; returns the results."""
        config, accelerator, state = self.config, self.accelerator, self.state
        metrics = self.metrics
        if metrics is None or state.get("evaluated_step") != state["step"]:
            metrics = self.run_eval()
        results = {
            **metrics,
            "step": state["step"],
            "best_top1": state["best_top1"],
            "best_step": state["best_step"],
            "skipped_images": state["skipped_images"],
            "history": state.get("history", []),
        }
        steps.save()
        save_final(self.model, self.save_model, config, accelerator, results, self.adapter)
        if accelerator.is_main_process:
            if state["skipped_images"]:
                print(f"skipped {state['skipped_images']} unreadable images (--on-bad-image skip)")
            if config.push_to_hub:
                from lastvit.hub import publish

                publish(config.output_dir, config.push_to_hub, for_flag="--push-to-hub")
        accelerator.end_training()
        return results
