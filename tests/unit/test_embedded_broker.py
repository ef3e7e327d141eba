"""The embedded broker's housekeeping: consumed message files do not pile up forever."""

from __future__ import annotations

import os
import time
from pathlib import Path

from service.config import Settings
from service.tasks import celery_config, embedded_broker_folders, prune_processed_messages


def test_consumed_messages_stay_beside_the_queue_not_in_tmp(tmp_path: Path) -> None:
    options = celery_config(Settings(var_dir=tmp_path))["broker_transport_options"]
    assert options["store_processed"] is True
    assert Path(options["processed_folder"]).parent == Path(options["data_folder_in"]).parent


def test_tick_prunes_consumed_messages_older_than_an_hour(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path)
    processed = embedded_broker_folders(settings)["processed"]
    processed.mkdir(parents=True)
    old, fresh = processed / "1_old.mail.msg", processed / "2_new.mail.msg"
    old.write_text("{}")
    fresh.write_text("{}")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    assert prune_processed_messages(settings) == 1
    assert not old.exists()
    assert fresh.exists()


def test_nothing_to_prune_on_a_real_broker(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path, broker_url="redis://127.0.0.1:6379/0")
    assert prune_processed_messages(settings) == 0
