"""The README's main command (`lastvit-demo`) runs offline, saves, reloads, and never clobbers a folder."""

import pytest

from training_scripts.demo import main


def test_demo_saves_a_checkpoint_that_reloads_identically(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["--output-dir", str(out)]) == 0
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "modeling_lastvit.py"} <= {
        p.name for p in out.iterdir()
    }
    printed = capsys.readouterr().out
    assert "votes per patch sum to 768 = K x D = 768" in printed
    assert "max |diff| of pooled feature = 0.00e+00" in printed


def test_demo_refuses_to_overwrite_an_existing_folder_unless_asked(tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="--overwrite"):
        main(["--output-dir", str(out)])
    assert (out / "precious.txt").read_text() == "keep me"
    assert main(["--output-dir", str(out), "--overwrite"]) == 0
    assert not (out / "precious.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind
