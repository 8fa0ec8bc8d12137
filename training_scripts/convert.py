"""`lastvit-convert`: the command line over the converters in `modeling_lastvit.conversion`.

Only argparse and the torch-free `lastvit.conversion_options` are imported at the top, so `--help` starts fast; the
converters, torch and transformers are imported when a conversion runs.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from lastvit.conversion_options import (
    CLIP_ACTIVATIONS,
    POOLING_CHOICES,
    SCORE_RULES,
    SOURCES,
    STANDARD_NUM_HEADS,
    TIMM_GLOBAL_POOLS,
    ConversionOptions,
)

DTYPES = ("bfloat16", "float16", "float32")


def _released_checkpoint(name: str) -> str:
    """`--released NAME`, checked when given (the names live with the model cards, which import torch)."""
    from lastvit.cards.model_card import RELEASED_CHECKPOINTS

    if name not in RELEASED_CHECKPOINTS:
        raise argparse.ArgumentTypeError(
            f"invalid choice: {name!r} (choose from {', '.join(sorted(RELEASED_CHECKPOINTS))})"
        )
    return name


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lastvit-convert",
        description=(
            "Convert a ViT-family checkpoint into a LastViT folder (safetensors weights, config with auto_map, "
            "image-processor config matching the source's preprocessing, remote code and a model card). With "
            "--pooling source the converted model reproduces the source's outputs; --pooling lazystrike reads "
            "the same encoder out with LazyStrike (as the authors' released LaSt-ViT checkpoints are)."
        ),
        epilog=(
            "examples:\n"
            "  lastvit-convert --from hf --input google/vit-base-patch16-224 --output vit-b16-lastvit "
            "--pooling lazystrike\n"
            "  lastvit-convert --from torchvision --input ViT_190k.pth --output lastvit-vit-b16-supervised "
            "--pooling lazystrike --top-k 1\n"
            "  lastvit-convert --from openclip --input openai_b_16.pt --output lastvit-clip-b16 --with-text-tower "
            "--tokenizer bpe_simple_vocab_16e6.txt.gz --pooling lazystrike --top-k 1\n"
            "Loading never runs code from the file unless --trust-pickle is given."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--from",
        dest="source",
        required=True,
        choices=SOURCES,
        help="source kind: hf (a transformers model, incl. DINOv3, SigLIP/SigLIP2, AIMv2, I-JEPA), torchvision "
        "(VisionTransformer state dict), dino (facebookresearch/dino ViT checkpoint), openclip (OpenAI CLIP / "
        "open_clip checkpoint or TorchScript archive), timm (timm VisionTransformer state dict)",
    )
    parser.add_argument(
        "--input",
        required=True,
        help="a checkpoint file (.pth/.pt/.bin/.safetensors) or, for --from hf, a local folder or Hub id",
    )
    parser.add_argument("--output", required=True, type=Path, help="folder to write the converted checkpoint into")
    parser.add_argument(
        "--pooling",
        default="source",
        choices=POOLING_CHOICES,
        help="global readout: 'source' keeps the source's own (CLS) readout for exact parity; "
        "'lazystrike' is LaSt-ViT's; 'mean' / 'max' / 'cls' for ablations (default: source)",
    )
    parser.add_argument("--top-k", type=int, help="LazyStrike K, patches averaged per channel (default 1)")
    parser.add_argument("--top-k-ratio", type=float, help="LazyStrike K as a fraction of the patch count, e.g. 0.5")
    parser.add_argument("--sigma", type=float, help="LazyStrike Gaussian window width (default sqrt(hidden size))")
    parser.add_argument(
        "--score",
        choices=SCORE_RULES,
        help="LazyStrike stability score: 'repo' (released code, default) or 'paper' (Eq. 5)",
    )
    parser.add_argument(
        "--num-labels",
        type=int,
        help="classifier: omit to keep the source's head (if any), 0 to drop it, N for an N-way head "
        "(kept if the source's has N classes, else newly initialised)",
    )
    parser.add_argument(
        "--num-heads",
        type=int,
        help="attention heads, for torchvision / dino / openclip files of a non-standard width "
        f"(standard widths: {sorted(STANDARD_NUM_HEADS)})",
    )
    parser.add_argument(
        "--global-pool",
        choices=TIMM_GLOBAL_POOLS,
        help="timm: the model's global_pool, which its state dict does not record (default: map with an attn_pool, "
        "avg with fc_norm or without a CLS token, else token)",
    )
    parser.add_argument(
        "--checkpoint-key",
        help="entry of the checkpoint dict that holds the weights (dino: 'teacher' by default; "
        "otherwise 'state_dict' / 'model' / 'module' are tried)",
    )
    parser.add_argument(
        "--clip-activation",
        default="quick_gelu",
        choices=CLIP_ACTIVATIONS,
        help="openclip MLP activation: quick_gelu for OpenAI CLIP weights (default), gelu for "
        "open_clip models trained with nn.GELU",
    )
    parser.add_argument(
        "--with-text-tower",
        action="store_true",
        help="openclip: convert the whole CLIP model (image tower, text tower, logit_scale) into a LastViTCLIPModel "
        "folder with its tokenizer, for the zero-shot-image-classification pipeline and as a start for "
        "fine-tuning. A flag rather than another --from, because the source file and the image tower's "
        "conversion (and every readout option) are the same; only what is kept grows",
    )
    parser.add_argument(
        "--tokenizer",
        metavar="PATH",
        help="with --with-text-tower: OpenAI's / open_clip's bpe_simple_vocab_16e6.txt.gz, or a transformers "
        "tokenizer folder (e.g. a saved CLIPTokenizer); default: open_clip's bundled BPE when open_clip is installed",
    )
    parser.add_argument(
        "--text-num-heads",
        type=int,
        help="with --with-text-tower: text-tower attention heads (default: width // 64, OpenAI's and open_clip's rule)",
    )
    parser.add_argument("--dtype", default="float32", choices=DTYPES, help="dtype of the saved weights")
    parser.add_argument(
        "--released",
        type=_released_checkpoint,
        metavar="NAME",
        help="the file is one of the authors' released LaSt-ViT checkpoints (a folder name under "
        "model_cards/, e.g. lastvit-vit-b16-supervised): write that model card",
    )
    parser.add_argument("--model-name", help="title of the model card (default: the output folder's name)")
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow full unpickling / torch.jit.load for files a weights-only load refuses. "
        "UNSAFE: a malicious file can run arbitrary code; only for files you trust",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing, non-empty --output folder")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    options = ConversionOptions(
        pooling=args.pooling,
        top_k=args.top_k,
        top_k_ratio=args.top_k_ratio,
        sigma=args.sigma,
        score=args.score,
        num_labels=args.num_labels,
        num_heads=args.num_heads,
        clip_activation=args.clip_activation,
        text_tower=args.with_text_tower,
        text_num_heads=args.text_num_heads,
        global_pool=args.global_pool,
    )
    if args.with_text_tower and args.released:
        parser.error("--released writes the card of an image-tower checkpoint; it does not go with --with-text-tower.")
    command = "lastvit-convert " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    import torch

    from lastvit.cards.converted import converted_clip_model_card
    from lastvit.cards.model_card import converted_model_card
    from lastvit.conversion_options import ConversionError
    from modeling_lastvit import LastViTForImageClassification
    from modeling_lastvit.conversion.checkpoint_loading import CheckpointLoadError
    from modeling_lastvit.conversion.sources import convert_checkpoint
    from modeling_lastvit.conversion.writer import write_clip_folder, write_folder

    try:
        options.validate()
        print(f"Converting {args.input} (--from {args.source}) ...")
        result, parity = convert_checkpoint(
            args.source, args.input, options, args.checkpoint_key, args.trust_pickle, tokenizer=args.tokenizer
        )
        name = args.model_name or args.output.name
        if options.text_tower:
            round_trip = write_clip_folder(
                result,
                args.output,
                lambda diffs: converted_clip_model_card(result, command, name, diffs).content,
                overwrite=args.overwrite,
                dtype=getattr(torch, args.dtype),
            )
            return _report_clip(result, round_trip, args.output)
        config = result.model.config
        if args.released and (config.hidden_size, config.num_hidden_layers, config.patch_size_hw) != (
            768,
            12,
            (16, 16),
        ):
            result.notes.append(
                f"--released {args.released} describes a ViT-B/16, but this file is width {config.hidden_size}, "
                f"{config.num_hidden_layers} blocks, patch {config.patch_size_hw[0]}: the card's details do not "
                "fit it."
            )

        def card(round_trip: float) -> str:
            return converted_model_card(
                result, command=command, model_name=name, parity=parity, round_trip=round_trip, released=args.released
            ).content

        round_trip = write_folder(
            result, args.output, card, overwrite=args.overwrite, dtype=getattr(torch, args.dtype)
        )
    except (ConversionError, CheckpointLoadError) as error:
        parser.exit(2, f"lastvit-convert: error: {error}\n")

    config = result.model.config
    print(f"  source     : {result.description}")
    print(
        f"  model      : {type(result.model).__name__}, pooling={config.pooling}"
        + (f", {config.num_labels} labels" if isinstance(result.model, LastViTForImageClassification) else "")
    )
    for reason, count in result.dropped.items():
        print(f"  dropped    : {count} tensors ({reason})")
    for note in result.notes:
        print(f"  note       : {note}")
    if parity:
        for output, value in parity.items():
            print(f"  parity     : max |diff| {output} = {value:.2e}")
    print(f"  round trip : max |diff| after reloading the folder = {round_trip:.2e}")
    print(f"Wrote {args.output}")
    return 0


def _report_clip(result, round_trip: dict[str, float], output: Path) -> int:
    config = result.model.config
    print(f"  source     : {result.description}")
    print(
        f"  model      : LastViTCLIPModel, image readout {config.vision_config.pooling}, joint space "
        f"{config.projection_dim}, tokenizer {type(result.tokenizer).__name__} ({len(result.tokenizer)} tokens)"
    )
    for reason, count in result.dropped.items():
        print(f"  dropped    : {count} tensors ({reason})")
    for note in result.notes:
        print(f"  note       : {note}")
    for name, value in round_trip.items():
        print(f"  round trip : max |diff| {name} after reloading the folder = {value:.2e}")
    print(f"Wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
