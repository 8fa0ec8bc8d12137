"""lastvit-demo: build a small LaSt-ViT, run it on a generated scene, save it, and load it back
with the Auto classes through remote code. Offline; about ten seconds on a laptop CPU.

What it shows is mechanics, not results: the model is untrained, so its vote map says nothing
yet about where a trained LaSt-ViT looks (see the evaluation scripts for that).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from lastvit.arguments import add_arguments, from_args, option


def save_atomically(objects, output_dir: Path, overwrite: bool) -> None:
    """Save every object's `save_pretrained` into one folder, written whole (see `lastvit.files`)."""
    from lastvit.files import is_nonempty_dir, write_folder

    if is_nonempty_dir(output_dir) and not overwrite:
        raise SystemExit(
            f"error: {output_dir} already holds files; pass --overwrite to replace them or choose another --output-dir."
        )
    write_folder(output_dir, lambda folder: [obj.save_pretrained(folder) for obj in objects])


def vote_grid(votes) -> str:
    """ASCII picture of a [h, w] vote map: blank (none) up to '#' (the most)."""
    shades = " .:-=+*#"
    scaled = (votes.float() / max(votes.max().item(), 1) * (len(shades) - 1)).round().long()
    return "\n".join("    " + "".join(shades[v] * 2 for v in row) for row in scaled.tolist())


@dataclass(kw_only=True)
class DemoArguments:
    output_dir: Path = option(Path("outputs/demo"), "where the checkpoint is saved")
    overwrite: bool = option(False, "replace an existing --output-dir")
    top_k: int = option(4, "LazyStrike K: patches each channel averages")
    registers: int = option(4, "number of register tokens")
    seed: int = option(0, "seed for the weights and the scene")


OPTIONS = (DemoArguments,)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lastvit-demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser, DemoArguments)
    return parser


def parse_args(argv=None) -> DemoArguments:
    return from_args(DemoArguments, build_parser().parse_args(argv))


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoImageProcessor, AutoModel

    from modeling_lastvit import LastViTConfig, LastViTImageProcessor, LastViTModel

    torch.manual_seed(args.seed)
    config = LastViTConfig(
        image_size=112,
        patch_size=16,
        hidden_size=192,
        num_hidden_layers=4,
        num_attention_heads=3,
        intermediate_size=768,
        num_register_tokens=args.registers,
        lazystrike_top_k=args.top_k,
    )
    model = LastViTModel(config).eval()
    processor = LastViTImageProcessor(size={"shortest_edge": 128}, crop_size={"height": 112, "width": 112})
    from lastvit.data.scenes import ellipse_scene

    image, box = ellipse_scene(seed=args.seed)
    pixel_values = processor(image, return_tensors="pt").pixel_values

    with torch.no_grad():
        out = model(pixel_values)
    votes = model.patches_to_map(out.patch_votes, *pixel_values.shape[-2:])[0]
    print(
        f"LastViT: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, pooling={config.pooling}, "
        f"K={args.top_k}, registers={args.registers}"
    )
    print(
        f"input {tuple(pixel_values.shape)} -> tokens {tuple(out.last_hidden_state.shape)}, "
        f"pooled {tuple(out.pooler_output.shape)}"
    )
    print(f"votes per patch sum to {int(out.patch_votes.sum())} = K x D = {args.top_k * config.hidden_size}")
    print("vote map of the untrained model (mechanics only):")
    print(vote_grid(votes))
    scale = 128 / image.size[0]  # resize to the processor's shortest edge, then centre-crop 112
    offset = (128 - 112) // 2
    x0, y0, x1, y1 = (int(v * scale) - offset for v in box)
    print(f"object box on the model input (pixels): ({x0}, {y0}, {x1}, {y1}); 16 px per map cell")

    save_atomically([model, processor], args.output_dir, args.overwrite)
    reloaded = AutoModel.from_pretrained(args.output_dir, trust_remote_code=True).eval()
    reprocessor = AutoImageProcessor.from_pretrained(args.output_dir, trust_remote_code=True)
    with torch.no_grad():
        again = reloaded(reprocessor(image, return_tensors="pt").pixel_values)
    max_diff = (again.pooler_output - out.pooler_output).abs().max().item()
    print(f"saved to {args.output_dir}; reloaded with AutoModel: max |diff| of pooled feature = {max_diff:.2e}")
    if max_diff > 1e-5:
        print("error: the reloaded model does not reproduce the saved one", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
