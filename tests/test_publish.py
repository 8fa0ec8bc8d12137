"""`lastvit-publish` checks the Hub account first and fails in one line that says what to do, before
validating anything (no network here: the Hub is a stand-in)."""

import pytest

from lastvit import hub
from training_scripts import publish as publish_cli


@pytest.fixture
def online(monkeypatch):
    """As on a user's machine: not in offline mode (the test suite sets HF_HUB_OFFLINE)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "validate_folder", lambda folder: pytest.fail("validated before the account check"))


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = publish_cli.main(["some/folder", "--repo-id", "you/model", *argv])
    return code, capsys.readouterr().err


def test_without_a_token_publish_says_how_to_log_in(online, monkeypatch, capsys):
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    code, err = run_cli(capsys)
    assert code == 1
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "no Hugging Face token" in err and "hf auth login" in err and "--token" in err


def test_without_network_publish_fails_in_one_line(online, monkeypatch, capsys):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    client_error = HfHubHTTPError.__bases__[0]  # the HTTP client's base error (a connection error here)

    def unreachable(self, *args, **kwargs):
        raise client_error("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(HfApi, "whoami", unreachable)
    code, err = run_cli(capsys, "--token", "hf_stand_in")
    assert code == 1
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "cannot reach the Hugging Face Hub" in err and "--dry-run" in err


def test_a_refused_token_is_named(online, monkeypatch, capsys):
    class Refusing:
        def whoami(self):
            from huggingface_hub.errors import HfHubHTTPError

            raise HfHubHTTPError(
                "401 Client Error: Unauthorized",
                response=type("R", (), {"status_code": 401, "headers": {}, "request": None})(),
            )

    with pytest.raises(hub.HubAccessError, match="token was refused"):
        hub.publish("some/folder", "you/model", api=Refusing())


def test_offline_mode_is_named_before_anything_else(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, err = run_cli(capsys)
    assert code == 1 and "HF_HUB_OFFLINE is set" in err


def test_dry_run_needs_no_account_and_names_a_missing_folder(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    assert publish_cli.main([str(tmp_path / "nowhere"), "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err and "save_pretrained" in err
