"""`lastvit.files.check_model_path`: a missing folder or a truncated weights file reads as one line
that names it and the fix, in every CLI that takes a model path."""

import json

import pytest
import torch
from safetensors.torch import save_file

from lastvit.files import ModelPathError, check_model_path
from training_scripts import finetune_peft, train


def saved_folder(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "lastvit"}))
    save_file({"w": torch.zeros(64, 64)}, str(folder / "model.safetensors"))
    return folder


def test_a_complete_folder_and_a_hub_id_pass(tmp_path):
    folder = saved_folder(tmp_path)
    assert check_model_path(folder) == str(folder)
    assert check_model_path("someone/lastvit-tiny") == "someone/lastvit-tiny"  # left to the Hub


def test_a_missing_folder_is_named_with_the_fix(tmp_path, monkeypatch):
    with pytest.raises(ModelPathError, match=r"runs/tiny does not exist \(give a folder written by save_pretrained"):
        monkeypatch.chdir(tmp_path)
        (tmp_path / "runs").mkdir()  # "runs/tiny" would look like a repo id, but runs/ is a local folder
        check_model_path("runs/tiny")
    with pytest.raises(ModelPathError, match="does not exist"):
        check_model_path(tmp_path / "absent")


def test_a_folder_without_config_is_not_a_model(tmp_path):
    with pytest.raises(ModelPathError, match="holds no config.json"):
        check_model_path(tmp_path)


def test_a_truncated_safetensors_file_is_named_with_the_fix(tmp_path):
    folder = saved_folder(tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ModelPathError) as error:
        check_model_path(folder)
    assert str(weights) in str(error.value) and "truncated" in str(error.value) and "again" in str(error.value)


@pytest.mark.parametrize("cli", [train, finetune_peft])
def test_training_clis_name_a_missing_model_folder_in_one_line(cli, tmp_path, capsys):
    missing = tmp_path / "no-such-run"
    code = cli.main(["--model-name-or-path", str(missing), "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert f"{missing} does not exist" in err and "Repo id must be" not in err
