import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_CLIP = SHARED / "data" / "egoloc_pour_water_rgb.mp4"
SAMPLE_CLIP = REPO / "sample_data" / "egoloc_pour_water_rgb.mp4"


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh storage root (and Dagster home) per test."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("EGO_ASSETS_HOME", str(h))
    # set, then removed: monkeypatch then restores what it was after the test, even where the test's own
    # code set it (use_local_instance does), so one test's Dagster home never becomes the next one's
    monkeypatch.setenv("DAGSTER_HOME", str(h / "dagster"))
    monkeypatch.delenv("DAGSTER_HOME")
    return h


@pytest.fixture
def real_clip():
    """The real egocentric clip: the shared one, else the copy the project ships."""
    for p in (SHARED_CLIP, SAMPLE_CLIP):
        if p.exists():
            return p
    pytest.skip(f"no real clip: neither {SHARED_CLIP} nor {SAMPLE_CLIP} exists")


def pytest_configure(config):
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")


E2E_DIR = Path(__file__).resolve().parent / "e2e"


def pytest_collection_modifyitems(config, items):
    """The test layers (pyproject's markers): everything under e2e/ is the ``e2e`` layer (the command
    line in subprocesses, whole Dagster runs over real clips, Postgres/S3 services, kill-and-rerun),
    so a new test there is never part of ``make test-fast`` by mistake."""
    for item in items:
        if E2E_DIR in Path(item.fspath).resolve().parents:
            item.add_marker(pytest.mark.e2e)
