"""Safe loading (`checkpoint_loading`): nothing in a file runs unless trusted, and a missing, empty,
truncated or corrupt file is one line that names the file and says what to do."""

import os
import pickle
import zipfile

import pytest
import torch
from safetensors.torch import save_file

from lastvit.conversion import CheckpointLoadError, ConversionError, extract_state_dict, load_checkpoint

from .conversion_helpers import torchvision_reference


class ArbitraryObject:
    """A class a weights-only load refuses (stands for anything a pickle could construct)."""


def test_pickled_objects_are_refused_with_the_risk_explained_unless_trusted(tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save({"model": torchvision_reference().state_dict(), "extra": ArbitraryObject()}, path)
    with pytest.raises(CheckpointLoadError, match="--trust-pickle") as error:
        load_checkpoint(path)
    assert "arbitrary code" in str(error.value)
    assert isinstance(load_checkpoint(path, trust_pickle=True)["extra"], ArbitraryObject)


class _CallsAFunction:
    def __reduce__(self):
        return (os.getcwd, ())


def test_torchscript_reader_refuses_any_global_but_tensors(tmp_path):
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps({"x": _CallsAFunction()}, protocol=2))
        archive.writestr("evil/constants.pkl", pickle.dumps((), protocol=2))
        archive.writestr("evil/code/__torch__.py", "")
    with pytest.raises(CheckpointLoadError, match="refusing to load the global"):
        load_checkpoint(path)


def test_a_wrong_checkpoint_key_lists_the_available_ones():
    with pytest.raises(ConversionError, match=r"--checkpoint-key 'ema' is not in the checkpoint.*teacher"):
        extract_state_dict({"teacher": {"a": torch.ones(1)}, "epoch": 3}, "ema")


@pytest.fixture
def good_files(tmp_path):
    state = torchvision_reference().state_dict()
    torch.save(state, tmp_path / "good.pth")
    torch.save(state, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    save_file(state, str(tmp_path / "good.safetensors"))
    return tmp_path


@pytest.mark.parametrize("name", ["good.pth", "legacy.pth", "good.safetensors"])
@pytest.mark.parametrize("keep", [0, 3, 100, 0.5])
def test_truncated_files_are_one_line_naming_the_file_and_the_fix(good_files, name, keep):
    data = (good_files / name).read_bytes()
    cut = good_files / f"cut_{name}"
    cut.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])
    with pytest.raises(CheckpointLoadError) as error:
        load_checkpoint(cut)
    message = str(error.value)
    assert str(cut) in message and "\n" not in message
    assert "download" in message  # the fix: fetch the file again


def test_a_file_that_is_not_a_checkpoint_says_so(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("these are not weights\n")
    with pytest.raises(CheckpointLoadError, match="is not a PyTorch checkpoint"):
        load_checkpoint(path)


def test_a_missing_file_or_a_folder_names_the_path(tmp_path):
    with pytest.raises(CheckpointLoadError, match="no checkpoint file at .*missing.pth"):
        load_checkpoint(tmp_path / "missing.pth")
    with pytest.raises(CheckpointLoadError, match="is a folder.*--from hf"):
        load_checkpoint(tmp_path)


def test_complete_files_still_load(good_files):
    for name in ("good.pth", "legacy.pth", "good.safetensors"):
        assert set(load_checkpoint(good_files / name)) == set(torchvision_reference().state_dict()), name
