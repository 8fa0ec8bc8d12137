"""The options of `lastvit-export` (one flag per field), importable without torch so that `--help` stays light."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lastvit.arguments import option
from lastvit.data.arguments import DataArguments

EXPORTERS = ("dynamo", "torchscript")
DEFAULT_OPSET = 18
FORMATS = ("onnx", "pt2")


@dataclass(kw_only=True)
class ExportOptions:
    """What `lastvit-export` does; every field is one flag."""

    model: str = option(help="model folder (save_pretrained / lastvit-train) or Hub id", metavar="PATH_OR_ID")
    output_dir: Path = option(help="folder to write: the model file, preprocessor_config.json, README.md")
    format: str = option("onnx", "onnx (model.onnx, for onnxruntime) or pt2 (a torch.export program)", choices=FORMATS)
    exporter: str = option("dynamo", "ONNX exporter of torch.onnx.export (default: dynamo)", choices=EXPORTERS)
    opset: int = option(DEFAULT_OPSET, f"ONNX opset, >= 17 (default: {DEFAULT_OPSET})")
    dynamic_size: bool = option(False, "also make height and width dynamic (multiples of the patch size)")
    quantize: str | None = option(
        None,
        "also write model.int8.onnx (onnxruntime dynamic quantisation) and measure its accuracy",
        choices=("int8",),
    )
    check_images: int = option(8, "held-out images the export is checked on against eager before writing (default: 8)")
    tolerance: float = option(1e-4, "largest allowed difference from eager on those images (default: 1e-4)")
    eval_images: int = option(200, "held-out images for the int8 accuracy change (default: 200)")
    trust_remote_code: bool = option(False, "load the model with its own (remote) code instead of the installed one")
    overwrite: bool = option(False, "replace an output folder that holds files (only once the new export passed)")
    data: DataArguments = field(default_factory=DataArguments, metadata={"cli": False})


DATA_FLAGS = ("dataset", "data_dir", "eval_split", "image_column", "label_column", "scenes_test")
