"""The names of a LeRobot dataset's ego_assets files and folders, the staging/state formats and the
export's errors: what staging, assembly, versions, the append and publishing share (imported, never
repeated)."""

from __future__ import annotations


STAGING_FORMAT = 2  # 2: per-episode camera
STATE_FORMAT = 2
STAGED_VIDEO = "video.mp4"
STAGED_DATA = "data.parquet"
STAGED_EPISODES = "episodes.parquet"
STAGED_MANIFEST = "manifest.json"
STATE_PATH = "meta/ego_assets_state.json"
PROVENANCE_PATH = "meta/ego_assets_provenance.parquet"
HEADER_PATH = "meta/ego_assets_header.json"  # the state without its partitions (small; read by an append)
APPENDED_DIR = "meta/ego_assets_appended"  # <key>.json: the state entry of each partition appended since
TMP_DIR = ".ego_assets_tmp"
SPLITS = ("train", "validation")
DEFAULT_REPO_ID = "ego_assets/egocentric_hands"
DEFAULT_VAL_FRACTION = 0.1
EPISODES_PER_META_FILE = 10_000
KEY_TAG = "ego_assets:"  # MP4 comment / Parquet metadata value prefix naming the partition
PARQUET_KEY = b"ego_assets.partition_key"


class LeRobotExportError(ValueError):
    """Bad input for the LeRobot export (names the input and the reason)."""


class IncompatiblePartitionError(LeRobotExportError):
    """A staged partition does not fit the dataset (fps, action space, image size, codec)."""


class DatasetStateError(LeRobotExportError):
    """The dataset folder does not match its recorded state (files missing or foreign)."""
