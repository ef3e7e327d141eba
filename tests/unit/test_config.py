"""Settings that need no server, and the secret key the service makes for itself."""

from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from service.config import Settings


def _read_key(var_dir: str) -> str:
    return Settings(var_dir=Path(var_dir)).secret_keys()[0]


def test_a_generated_key_is_private_and_the_same_for_every_process(tmp_path: Path) -> None:
    # `newsletter up` starts api, worker and beat at once: they must all sign with one key.
    with multiprocessing.get_context("spawn").Pool(6) as pool:
        keys = pool.map(_read_key, [str(tmp_path)] * 24)
    assert len(set(keys)) == 1
    assert len(keys[0]) >= 32
    mode = stat.S_IMODE(os.stat(tmp_path / "secret_key").st_mode)
    assert mode == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name != "secret_key"]  # no temp files left


def test_configured_keys_rotate_newest_first(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path, secret_key="new-key, old-key")
    assert settings.secret_keys() == ["new-key", "old-key"]
    assert not (tmp_path / "secret_key").exists()


def test_an_empty_key_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret_key").write_text("")
    with pytest.raises(RuntimeError, match="no usable key"):
        Settings(var_dir=tmp_path).secret_keys()


def test_defaults_need_no_server(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path)
    assert settings.resolved_database_url == f"sqlite:///{(tmp_path / 'newsletter.db').resolve()}"
    assert settings.is_embedded_broker
    assert settings.mail_backend == "outbox"
