"""The text tokenizer of a converted CLIP (`lastvit-convert --from openclip --with-text-tower --tokenizer PATH`).

OpenAI CLIP and open_clip tokenize with one byte-level BPE, shipped as `bpe_simple_vocab_16e6.txt.gz`
(a header line, then one merge per line). `clip_tokenizer_from_bpe` builds transformers'
`CLIPTokenizer` from that file with the ids OpenAI's and open_clip's `SimpleTokenizer` give: the 256
byte characters, the same with `</w>`, one token per merge, then `<|startoftext|>` and
`<|endoftext|>` (open_clip calls them `<start_of_text>` / `<end_of_text>`; the ids are the same). The
end-of-text token is the largest id, so transformers' pooling at the first `eos_token_id` picks the
position open_clip's `argmax` of the ids picks. Text cleaning differs only where `SimpleTokenizer` runs
`ftfy` and unescapes HTML (transformers' CLIP tokenizer applies NFC, collapses whitespace and lower-cases).

Nothing is downloaded: the BPE file is the one given, or open_clip's bundled copy when open_clip is installed.
"""

from __future__ import annotations

import gzip
from pathlib import Path

from .options import ConversionError

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# SimpleTokenizer reads lines 1 .. 48894 of the BPE file: 49152 - 256 - 2 merges (the vocabulary is 49408).
MAX_MERGES = 49152 - 256 - 2
MISSING_TOKENIZER = (
    "--with-text-tower needs the text tokenizer and open_clip is not installed to supply its bundled BPE: pass "
    "--tokenizer PATH, either OpenAI's / open_clip's bpe_simple_vocab_16e6.txt.gz or a transformers tokenizer "
    "folder (e.g. a saved CLIPTokenizer)."
)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's / CLIP's reversible map from the 256 byte values to printable unicode characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def read_bpe_merges(path: Path) -> list[tuple[str, str]]:
    """The merges of a CLIP BPE file (`.txt.gz` or plain text): the first line is a header; blank lines
    (a trailing newline) are skipped; at most `MAX_MERGES` are read, as `SimpleTokenizer` does."""
    raw = path.read_bytes()
    try:
        text = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConversionError(f"{path} is not a CLIP BPE merges file (gzipped UTF-8 text): {error}.") from error
    merges = []
    for number, line in enumerate(text.split("\n")[1 : MAX_MERGES + 1], start=2):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ConversionError(
                f"{path}, line {number}: {line[:60]!r} is not a merge ('left right'); --tokenizer takes OpenAI's / "
                "open_clip's bpe_simple_vocab_16e6.txt.gz or a transformers tokenizer folder."
            )
        merges.append((parts[0], parts[1]))
    if not merges:
        raise ConversionError(f"{path} holds no BPE merges after its header line.")
    return merges


def clip_bpe_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """`SimpleTokenizer`'s vocabulary: bytes, bytes + `</w>`, one token per merge, start and end of text."""
    byte_chars = list(bytes_to_unicode().values())
    tokens = byte_chars + [char + "</w>" for char in byte_chars] + ["".join(merge) for merge in merges] + [BOS, EOS]
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ConversionError("the BPE merges produce a token twice, so the ids would not be SimpleTokenizer's.")
    return vocab


def clip_tokenizer_from_bpe(path: Path, context_length: int):
    """transformers' `CLIPTokenizer` with `SimpleTokenizer`'s ids, at most `context_length` tokens per text."""
    from transformers import CLIPTokenizer

    merges = read_bpe_merges(path)
    return CLIPTokenizer(vocab=clip_bpe_vocab(merges), merges=merges, model_max_length=context_length)


def default_bpe_path() -> Path | None:
    """open_clip's bundled `bpe_simple_vocab_16e6.txt.gz`, when open_clip is installed."""
    try:
        from open_clip.tokenizer import default_bpe
    except ImportError:
        return None
    return Path(default_bpe())


def load_clip_tokenizer(path: str | Path | None, context_length: int):
    """The tokenizer `--tokenizer` names: a transformers tokenizer folder or a CLIP BPE merges file;
    None: open_clip's bundled BPE, else a `ConversionError` saying what to pass."""
    if path is None:
        path = default_bpe_path()
        if path is None:
            raise ConversionError(MISSING_TOKENIZER)
    path = Path(path)
    if path.is_dir():
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as error:
            raise ConversionError(f"--tokenizer {path}: not a transformers tokenizer folder ({error}).") from error
        tokenizer.model_max_length = min(tokenizer.model_max_length, context_length)
        return tokenizer
    if not path.is_file():
        raise ConversionError(
            f"--tokenizer {path}: no such file or folder; give bpe_simple_vocab_16e6.txt.gz or a tokenizer folder."
        )
    return clip_tokenizer_from_bpe(path, context_length)
