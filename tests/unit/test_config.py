import pytest

from provisioner.config import REPO_ROOT, load_config
from provisioner.errors import ConfigError


def test_example_config_loads_and_matches_defaults(monkeypatch):
    monkeypatch.delenv("PROVISIONER_STATE_URL", raising=False)
    example = load_config(REPO_ROOT / "provisioner.example.yaml")
    assert set(example.offices) == {"tarakan", "buleleng"}
    assert example.office_for_zone("bulelengkab.go.id").key == "buleleng"
    assert example.sop_dir == REPO_ROOT / "sop"
    assert example.offices["tarakan"].calendar == REPO_ROOT / "sop" / "calendar" / "tarakan.yaml"
    assert example.offices["tarakan"].periods(4)[0][1].isoformat() == "16:30:00"
    assert example.offices["tarakan"].periods(5) == []


def test_env_state_url_wins(tmp_path, monkeypatch):
    config_file = tmp_path / "p.yaml"
    config_file.write_text("state_url: sqlite:///from-file.db\n")
    monkeypatch.setenv("PROVISIONER_STATE_URL", "sqlite:///from-env.db")
    assert load_config(config_file).resolved_state_url() == "sqlite:///from-env.db"
    monkeypatch.delenv("PROVISIONER_STATE_URL")
    assert load_config(config_file).resolved_state_url() == "sqlite:///from-file.db"


@pytest.mark.parametrize("text,message", [
    ("offices:\n  x:\n    name: X\n    short_name: X\n    zones: [x.go.id]\n    timezone: Mars/Olympus\n",
     "unknown time zone"),
    ("offices:\n  x:\n    name: X\n    short_name: X\n    zones: [x.go.id]\n    hours: {mon: ['16:00-07:30']}\n",
     "HH:MM-HH:MM"),
    ("colour: red\n", "colour"),
])
def test_bad_config_is_a_clear_error(tmp_path, text, message):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_webhook_secret(tmp_path, monkeypatch):
    monkeypatch.delenv("PROVISIONER_WEBHOOK_SECRET", raising=False)
    secret = tmp_path / "secret"
    secret.write_bytes(b"s" * 32 + b"\n")
    path = tmp_path / "p.yaml"
    path.write_text("webhook:\n  secret_file: secret\n")
    assert load_config(path).webhook_secret() == b"s" * 32
    monkeypatch.setenv("PROVISIONER_WEBHOOK_SECRET", "too-short")
    with pytest.raises(ConfigError, match="at least 32"):
        load_config(path).webhook_secret()
