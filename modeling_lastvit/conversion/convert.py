"""Former home of the converters, kept so that `from modeling_lastvit.conversion.convert import ...` still
works while callers move to `modeling_lastvit.conversion`. Remove once nothing imports it."""

from . import (
    ConversionError,
    ConversionOptions,
    ConversionResult,
    build_parser,
    compare_with_hf_source,
    convert_dino_state_dict,
    convert_hf_model,
    convert_openclip_state_dict,
    convert_torchvision_state_dict,
    extract_state_dict,
    load_hf_model,
    main,
    write_folder,
)
from .sources import convert_checkpoint as convert

__all__ = [
    "ConversionError",
    "ConversionOptions",
    "ConversionResult",
    "build_parser",
    "compare_with_hf_source",
    "convert",
    "convert_dino_state_dict",
    "convert_hf_model",
    "convert_openclip_state_dict",
    "convert_torchvision_state_dict",
    "extract_state_dict",
    "load_hf_model",
    "main",
    "write_folder",
]
