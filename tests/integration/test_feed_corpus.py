"""The parser against an outside corpus: the 2,249 test files feedparser 6.0.14 ships (BSD).

The sdist is fetched once with a pinned ``pip download`` into a cache outside the repository
(``NEWSLETTER_CORPUS_CACHE``, default ``~/.cache/newsletter-tests``) and reused; none of it is
committed. Every feed-looking file must parse or raise FeedError, each within a time bound; on
the well-formed RSS and Atom files the entry count must agree with feedparser's own in at least
99% of them. Figures are printed and written to test-output/feed-corpus.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
import warnings
from pathlib import Path

import pytest

from service.feeds.parse import parse_feed
from service.feeds.types import FeedError
from tests.conftest import service_unavailable

VERSION = "6.0.14"
CACHE = Path(os.environ.get("NEWSLETTER_CORPUS_CACHE", Path.home() / ".cache" / "newsletter-tests"))
FEED_SUFFIXES = {".xml", ".rss", ".atom", ".rdf", ".feed"}
COMPARED = ("wellformed/rss", "wellformed/atom", "wellformed/atom10")
PER_FILE_SECONDS = 2.0
REPORT = Path(__file__).resolve().parents[2] / "test-output" / "feed-corpus.json"


def _corpus() -> Path:
    """feedparser's tests/ folder, downloaded and extracted on first use."""
    folder = CACHE / f"feedparser-{VERSION}"
    tests = folder / f"feedparser-{VERSION}" / "tests"
    if tests.is_dir():
        return tests
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps"]
    command += ["--disable-pip-version-check", f"feedparser=={VERSION}", "-d", str(folder)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        service_unavailable("feedparser sdist", str(exc))
    sdist = folder / f"feedparser-{VERSION}.tar.gz"
    if done.returncode != 0 or not sdist.exists():
        service_unavailable("feedparser sdist", (done.stderr.strip().splitlines() or ["?"])[-1])
    with tarfile.open(sdist) as archive:
        members = [
            m for m in archive.getmembers() if "/tests/" in m.name and (m.isfile() or m.isdir())
        ]
        archive.extractall(folder, members=members, filter="data")
    return tests


def _feedparser_count(data: bytes) -> int:
    import feedparser

    # feedparser warns (DeprecationWarning, its own bozo notes) on some corpus files; the
    # project's filterwarnings=error must not turn the reference count into a failure.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return len(feedparser.parse(data).entries)


def test_feedparser_corpus() -> None:
    root = _corpus()
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in FEED_SUFFIXES)
    assert len(files) > 2000, f"only {len(files)} feed files under {root}"
    feed_errors, slowest, compared, agreed = 0, 0.0, 0, 0
    crashes: list[str] = []
    disagreements: list[str] = []
    started = time.perf_counter()
    for path in files:
        data, name = path.read_bytes(), path.relative_to(root).as_posix()
        begun = time.perf_counter()
        try:
            count: int | None = len(parse_feed(data, url=name).entries)
        except FeedError:
            feed_errors, count = feed_errors + 1, None
        except Exception as exc:  # anything but FeedError is a crash we report
            crashes.append(f"{name}: {exc!r}")
            continue
        elapsed = time.perf_counter() - begun
        slowest = max(slowest, elapsed)
        assert elapsed < PER_FILE_SECONDS, f"{name} took {elapsed:.2f}s"
        if name.startswith(tuple(f"{folder}/" for folder in COMPARED)):
            compared += 1
            expected = _feedparser_count(data)
            if count == expected:
                agreed += 1
            else:
                disagreements.append(f"{name}: ours {count}, feedparser {expected}")
    figures = {
        "feedparser_version": VERSION,
        "files_run": len(files),
        "feed_errors": feed_errors,
        "crashes": len(crashes),
        "compared_files": compared,
        "agreeing_files": agreed,
        "agreement_percent": round(100 * agreed / compared, 2) if compared else 0.0,
        "slowest_file_seconds": round(slowest, 4),
        "total_seconds": round(time.perf_counter() - started, 2),
        "disagreements": disagreements,
    }
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(json.dumps(figures, indent=2) + "\n")
    print(
        f"\nfeed corpus: {json.dumps({k: v for k, v in figures.items() if k != 'disagreements'})}"
    )
    assert not crashes, crashes[:10]
    assert compared > 500
    assert agreed >= 0.99 * compared, disagreements[:20]


@pytest.mark.parametrize("folder", ["illformed", "encoding", "entities"])
def test_corpus_folders_are_present(folder: str) -> None:
    """The hostile parts of the corpus are really there, so the run above covered them."""
    assert any((_corpus() / folder).rglob("*.xml"))
