"""`--from openclip --with-text-tower`: a whole OpenAI CLIP / open_clip model (image tower, text tower,
logit_scale) and CLIP's BPE tokenizer become one LastViT-CLIP folder whose text embeddings, image
embeddings and logits are the source's, and which the zero-shot pipeline runs where this package is
not installed."""

import gzip
import html
import json

import pytest
import regex
import torch
from PIL import Image

from lastvit.conversion import clip_tokenizer
from lastvit.conversion.clip_tokenizer import bytes_to_unicode, clip_tokenizer_from_bpe, load_clip_tokenizer
from lastvit.conversion.openclip_text import convert_openclip_clip_state_dict
from lastvit.conversion.options import ConversionError, ConversionOptions
from lastvit.conversion.sources import convert_checkpoint
from training_scripts.convert import main

from .conversion_helpers import NATIVE, assert_close, perturbed, pixels, random_image
from .reference_vits import ClipStub
from .test_saving_and_remote_code import run_isolated

CONTEXT = 16
# A CLIP BPE file in miniature: the header line, then merges in rank order (no trailing newline; the
# real file is cut after 48894 merges, so its trailing newline is never read either).
MERGES = ["t h", "th e</w>", "o f</w>", "p h", "ph o", "pho t", "phot o</w>", "d o", "do g</w>", "c a", "ca t</w>"]
MERGES += ["i t", "' s</w>", "r e", "re d</w>", "o n</w>", "s o", "so f", "sof a</w>", "b i", "bi r", "bir d</w>"]
TEXTS = [
    "a photo of the dog.",
    "A  Photo OF a Cat!",
    "it's a red sofa, 42 times",
    "the bird on the sofa",
    "dog",
]
LABELS = ["dog", "cat", "bird"]
OPENAI_BUFFERS = ("input_resolution", "context_length", "vocab_size")  # in OpenAI's files, not open_clip's


# --------------------------------------------------------------------------------------------
# The tokenizer: open_clip's SimpleTokenizer, written out, against the converted CLIPTokenizer
# --------------------------------------------------------------------------------------------


class SimpleTokenizer:
    """open_clip's / OpenAI's `SimpleTokenizer` (`tokenizer.py`) without ftfy: the vocabulary from the
    BPE file, the regex split, byte-to-unicode, greedy BPE by merge rank, then `tokenize`'s start,
    end-of-text and zero padding to the context length."""

    def __init__(self, bpe_path):
        self.byte_encoder = bytes_to_unicode_reference()
        merges = gzip.decompress(bpe_path.read_bytes()).decode("utf-8").split("\n")
        merges = [tuple(merge.split()) for merge in merges[1 : 49152 - 256 - 2 + 1]]
        vocab = list(self.byte_encoder.values())
        vocab = vocab + [v + "</w>" for v in vocab]
        vocab += ["".join(merge) for merge in merges]
        vocab += ["<start_of_text>", "<end_of_text>"]
        self.encoder = dict(zip(vocab, range(len(vocab))))
        self.bpe_ranks = dict(zip(merges, range(len(merges))))
        self.pat = regex.compile(
            r"""<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE,
        )
        self.sot, self.eot = self.encoder["<start_of_text>"], self.encoder["<end_of_text>"]

    def bpe(self, token):
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        while len(word) > 1:
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
        return word

    def encode(self, text):
        text = " ".join(html.unescape(html.unescape(text)).strip().split()).lower()
        ids = []
        for token in regex.findall(self.pat, text):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[piece] for piece in self.bpe(token))
        return ids

    def __call__(self, texts, context_length=CONTEXT):
        result = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            tokens = [self.sot] + self.encode(text) + [self.eot]
            result[row, : len(tokens)] = torch.tensor(tokens)
        return result


def bytes_to_unicode_reference():
    bs = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


@pytest.fixture(scope="module")
def bpe_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("bpe") / "bpe_simple_vocab_tiny.txt.gz"
    path.write_bytes(gzip.compress("\n".join(["#version: 0.2", *MERGES]).encode("utf-8")))
    return path


def test_byte_to_unicode_map_is_clips():
    assert bytes_to_unicode() == bytes_to_unicode_reference()


def test_bpe_file_gives_a_clip_tokenizer_that_encodes_like_open_clips_simple_tokenizer(bpe_path):
    reference = SimpleTokenizer(bpe_path)
    tokenizer = clip_tokenizer_from_bpe(bpe_path, CONTEXT)
    assert len(tokenizer) == len(reference.encoder) == 512 + len(MERGES) + 2
    assert (tokenizer.bos_token, tokenizer.eos_token) == ("<|startoftext|>", "<|endoftext|>")
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (reference.sot, reference.eot)
    assert tokenizer.eos_token_id == len(tokenizer) - 1  # the largest id: open_clip's arg-max pools there
    for text in TEXTS:
        assert tokenizer(text)["input_ids"] == [reference.sot] + reference.encode(text) + [reference.eot], text
    assert tokenizer.convert_ids_to_tokens(tokenizer("the dog")["input_ids"]) == [
        "<|startoftext|>",
        "the</w>",
        "dog</w>",
        "<|endoftext|>",
    ]


def test_a_transformers_tokenizer_folder_is_taken_as_it_is(bpe_path, tmp_path):
    clip_tokenizer_from_bpe(bpe_path, 77).save_pretrained(tmp_path / "tok")
    tokenizer = load_clip_tokenizer(tmp_path / "tok", CONTEXT)
    assert tokenizer.model_max_length == CONTEXT  # capped at the model's context
    assert tokenizer(TEXTS)["input_ids"] == clip_tokenizer_from_bpe(bpe_path, CONTEXT)(TEXTS)["input_ids"]


def test_without_a_tokenizer_and_without_open_clip_the_error_says_what_to_pass(monkeypatch):
    monkeypatch.setattr(clip_tokenizer, "default_bpe_path", lambda: None)
    with pytest.raises(ConversionError, match="pass --tokenizer PATH.*bpe_simple_vocab_16e6.txt.gz"):
        load_clip_tokenizer(None, CONTEXT)


def test_a_file_that_is_not_a_bpe_merges_file_is_refused(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("#version: 0.2\nthis line has three\n")
    with pytest.raises(ConversionError, match="line 2.*is not a merge"):
        load_clip_tokenizer(path, CONTEXT)


# --------------------------------------------------------------------------------------------
# The model: parity with OpenAI CLIP's forward, in the OpenAI and the open_clip layouts
# --------------------------------------------------------------------------------------------


def clip_source(act=None):
    torch.manual_seed(5)
    kwargs = {"act": act} if act else {}
    return perturbed(ClipStub(vocab_size=512 + len(MERGES) + 2, context_length=CONTEXT, **kwargs))


def save_openai(path, reference):
    """OpenAI's layout: the bare state dict, bookkeeping buffers included."""
    torch.save(reference.state_dict(), path)
    return path


def save_open_clip(path, reference):
    """open_clip's training-checkpoint layout: {'epoch', 'name', 'state_dict': {'module.' + key}}."""
    state = {f"module.{k}": v for k, v in reference.state_dict().items() if k not in OPENAI_BUFFERS}
    torch.save({"epoch": 3, "name": "run", "state_dict": state}, path)
    return path


LAYOUTS = {
    "openai-quick_gelu": (save_openai, None, "quick_gelu"),
    "open_clip-gelu": (save_open_clip, torch.nn.GELU, "gelu"),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_whole_clip_converts_with_the_sources_text_and_image_embeddings_and_logits(tmp_path, bpe_path, layout):
    save, act, activation = LAYOUTS[layout]
    reference = clip_source(act)
    path = save(tmp_path / "clip.pt", reference)
    options = ConversionOptions(num_heads=4, clip_activation=activation, text_tower=True, text_num_heads=2)
    result, _ = convert_checkpoint("openclip", str(path), options, tokenizer=str(bpe_path))
    model = result.model
    assert type(model).__name__ == "LastViTCLIPModel"
    assert model.config.text_config.hidden_act == activation
    assert model.config.text_config.eos_token_id == result.tokenizer.eos_token_id == len(result.tokenizer) - 1

    inputs = result.tokenizer(TEXTS, padding=True, return_tensors="pt")  # padded with end-of-text, not zeros
    ids = SimpleTokenizer(bpe_path)(TEXTS)  # OpenAI's tokenize: zero-padded to the context
    x = pixels()
    with torch.no_grad():
        out = model(**inputs, pixel_values=x)
        scale = reference.logit_scale.exp()
        assert_close(model.get_text_features(**inputs).pooler_output, reference.encode_text(ids), "text embeds")
        assert_close(model.get_image_features(x).pooler_output, reference(x), "image embeds")
        assert_close(model.logit_scale.exp(), scale, "logit scale")
        assert_close(out.logits_per_image / scale, reference.logits(x, ids) / scale, "logits_per_image (cosines)")


def test_text_is_pooled_at_the_end_of_text_token_where_open_clip_takes_the_argmax(bpe_path):
    reference = clip_source()
    tokenizer = clip_tokenizer_from_bpe(bpe_path, CONTEXT)
    model = convert_openclip_clip_state_dict(
        reference.state_dict(), ConversionOptions(num_heads=4, text_tower=True, text_num_heads=2), tokenizer
    ).model
    inputs = tokenizer(TEXTS, padding=True, return_tensors="pt")
    ids = inputs["input_ids"]
    first_eos = (ids == model.config.text_config.eos_token_id).int().argmax(-1)
    assert torch.equal(first_eos, inputs["attention_mask"].sum(-1) - 1)  # the last real token of each text
    assert torch.equal(first_eos, SimpleTokenizer(bpe_path)(TEXTS).argmax(-1))  # open_clip's position
    with torch.no_grad():
        hidden = model.text_model.text_model(**inputs).last_hidden_state
        pooled = model.get_text_features(**inputs).pooler_output
    assert_close(pooled, model.text_model.text_projection(hidden[torch.arange(len(TEXTS)), first_eos]), "pooled")


def test_lazystrike_readout_applies_to_the_image_tower_of_the_clip_model(bpe_path):
    reference = clip_source()
    options = ConversionOptions(pooling="lazystrike", top_k=1, num_heads=4, text_tower=True, text_num_heads=2)
    model = convert_openclip_clip_state_dict(reference.state_dict(), options, str(bpe_path)).model
    x = pixels((48, 40))
    with torch.no_grad():
        assert_close(model.get_image_features(x).pooler_output, reference.visual(x, lazystrike_k=1), "LazyStrike")


@pytest.mark.parametrize(
    "options, source, message",
    [
        ({"text_tower": True, "num_labels": 5}, "openclip", "no classifier head: drop --num-labels"),
        ({"text_num_heads": 2}, "openclip", "--text-num-heads only applies with --with-text-tower"),
        ({"text_tower": True}, "dino", "--from dino has no text tower"),
    ],
)
def test_options_that_do_not_fit_a_text_tower_are_refused(tmp_path, bpe_path, options, source, message):
    path = save_openai(tmp_path / "clip.pt", clip_source())
    with pytest.raises(ConversionError, match=message):
        convert_checkpoint(source, str(path), ConversionOptions(num_heads=4, **options), tokenizer=str(bpe_path))


def test_a_tokenizer_larger_than_the_text_vocabulary_is_refused(tmp_path, bpe_path):
    small = perturbed(ClipStub(vocab_size=100, context_length=CONTEXT))
    with pytest.raises(ConversionError, match="not this model's tokenizer"):
        convert_openclip_clip_state_dict(
            small.state_dict(), ConversionOptions(num_heads=4, text_tower=True, text_num_heads=2), str(bpe_path)
        )


def test_an_image_tower_checkpoint_without_text_keys_names_the_missing_key(bpe_path):
    visual = {k: v for k, v in clip_source().state_dict().items() if k.startswith("visual.")}
    with pytest.raises(ConversionError, match="no 'token_embedding.weight'"):
        convert_openclip_clip_state_dict(
            visual, ConversionOptions(num_heads=4, text_tower=True, text_num_heads=2), str(bpe_path)
        )


# --------------------------------------------------------------------------------------------
# The folder: lastvit-convert, Auto classes in-process, the zero-shot pipeline in a fresh process
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def converted_clip(tmp_path_factory, bpe_path):
    tmp = tmp_path_factory.mktemp("convert-clip")
    source = save_openai(tmp / "openai_tiny.pt", clip_source())
    folder = tmp / "lastvit-clip"
    argv = ["--from", "openclip", "--input", str(source), "--output", str(folder), "--with-text-tower"]
    argv += ["--tokenizer", str(bpe_path), "--num-heads", "4", "--text-num-heads", "2"]
    assert main(argv) == 0
    return folder


def test_cli_writes_what_save_pretrained_writes_and_a_card(converted_clip):
    names = {path.name for path in converted_clip.iterdir()}
    assert names == {
        "config.json",
        "model.safetensors",
        "modeling_lastvit_clip.py",
        "configuration_lastvit_clip.py",
        "configuration_lastvit.py",
        "modeling_lastvit.py",
        "pooling_lastvit.py",
        "image_processing_lastvit.py",
        "preprocessor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
    }
    config = json.loads((converted_clip / "config.json").read_text())
    assert config["model_type"] == "lastvit-clip"
    assert config["auto_map"]["AutoModelForZeroShotImageClassification"] == "modeling_lastvit_clip.LastViTCLIPModel"
    card = (converted_clip / "README.md").read_text()
    assert "pipeline_tag: zero-shot-image-classification" in card
    assert "--with-text-tower" in card and "| logits_per_image | 0.00e+00 |" in card


def test_auto_classes_and_the_pipeline_load_the_folder_in_process_without_remote_code(converted_clip, monkeypatch):
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForZeroShotImageClassification,
        dynamic_module_utils,
        pipeline,
    )

    from modeling_lastvit import LastViTCLIPConfig, LastViTCLIPModel

    assert type(AutoConfig.from_pretrained(converted_clip)) is LastViTCLIPConfig
    for auto_class in (AutoModel, AutoModelForZeroShotImageClassification):
        assert type(auto_class.from_pretrained(converted_clip)) is LastViTCLIPModel
    # Image pipelines also look for an optional AutoVideoProcessor in the processor's auto_map; a 0 s
    # timeout turns transformers' stdin prompt for it into an immediate "no" (as in
    # test_saving_and_remote_code's no_remote_code_prompt).
    monkeypatch.setattr(dynamic_module_utils, "TIME_OUT_REMOTE_CODE", 0)
    classify = pipeline("zero-shot-image-classification", model=str(converted_clip))
    assert type(classify.model) is LastViTCLIPModel
    scores = classify(random_image(*NATIVE), candidate_labels=LABELS)
    assert sorted(p["label"] for p in scores) == sorted(LABELS)


def test_converted_folder_runs_the_zero_shot_pipeline_in_a_fresh_process_without_the_package(converted_clip, tmp_path):
    from transformers import AutoImageProcessor, AutoTokenizer

    from modeling_lastvit import LastViTCLIPModel

    random_image(*NATIVE).save(tmp_path / "image.png")
    model = LastViTCLIPModel.from_pretrained(converted_clip).eval()
    processor = AutoImageProcessor.from_pretrained(converted_clip)
    tokenizer = AutoTokenizer.from_pretrained(converted_clip)
    with torch.no_grad():
        logits = model(
            **tokenizer([f"a photo of a {label}." for label in LABELS], padding=True, return_tensors="pt"),
            pixel_values=processor(Image.open(tmp_path / "image.png"), return_tensors="pt").pixel_values,
        ).logits_per_image
    torch.save({"probs": logits.softmax(-1)[0]}, tmp_path / "expected.pt")
    run_isolated(
        tmp_path,
        """
        from PIL import Image
        from transformers import pipeline

        classify = pipeline("zero-shot-image-classification", model=ARGS["folder"], trust_remote_code=True)
        check_remote(classify.model)
        labels = json.loads(ARGS["labels"])
        predictions = classify(Image.open(ARGS["image"]), candidate_labels=labels, hypothesis_template="a photo of a {}.")
        scores = {p["label"]: p["score"] for p in predictions}
        expected = torch.load(ARGS["expected"], weights_only=True)["probs"]
        check_close("scores", torch.tensor([scores[label] for label in labels]), expected)
        """,
        folder=converted_clip,
        image=tmp_path / "image.png",
        expected=tmp_path / "expected.pt",
        labels=json.dumps(LABELS),
    )


def test_cli_documents_the_text_tower_flags_and_refuses_misuse_in_one_line(tmp_path, capsys, monkeypatch):
    from training_scripts.convert import build_parser

    text = build_parser().format_help()
    for flag in ("--with-text-tower", "--tokenizer", "--text-num-heads"):
        assert flag in text
    source = str(save_openai(tmp_path / "clip.pt", clip_source()))
    base = ["--from", "openclip", "--input", source, "--output", str(tmp_path / "out"), "--num-heads", "4"]
    monkeypatch.setattr(clip_tokenizer, "default_bpe_path", lambda: None)
    for extra, expected in [
        (["--with-text-tower", "--text-num-heads", "2"], "pass --tokenizer PATH"),
        (["--tokenizer", str(tmp_path / "bpe.txt.gz")], "--tokenizer only applies with --with-text-tower"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(base + extra)
        assert exit_info.value.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("lastvit-convert: error: ") and expected in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_a_converted_clip_fine_tunes_with_lazystrike_and_the_result_loads_with_the_auto_classes(
    converted_clip, tmp_path
):
    """Tab. 8's route: an OpenAI CLIP (CLS readout) converted whole, then fine-tuned with LazyStrike K = N/2
    on image-text pairs; its tokenizer (CLIP's BPE) and 16-token context carry over."""
    from transformers import AutoModel, AutoTokenizer

    from lastvit.clip.training import CLIPTrainingArguments, train_clip

    out = tmp_path / "fine-tuned"
    results = train_clip(
        CLIPTrainingArguments(
            output_dir=out,
            model_name_or_path=str(converted_clip),
            pooling="lazystrike",
            top_k_ratio=0.5,
            max_text_length=CONTEXT,
            scenes_train=16,
            scenes_test=8,
            batch_size=8,
            epochs=1,
            progress=False,
        )
    )
    assert results["step"] == 2 and 0.0 <= results["zero_shot_top1"] <= 1.0
    tuned, source = AutoTokenizer.from_pretrained(out), AutoTokenizer.from_pretrained(converted_clip)
    assert tuned.get_vocab() == source.get_vocab() and tuned("a photo of a dog.") == source("a photo of a dog.")
    model = AutoModel.from_pretrained(out)
    assert type(model).__name__ == "LastViTCLIPModel"
    assert model.config.vision_config.pooling == "lazystrike"
    assert model.config.vision_config.lazystrike_top_k_ratio == 0.5
    assert model.config.text_config.max_position_embeddings == CONTEXT
