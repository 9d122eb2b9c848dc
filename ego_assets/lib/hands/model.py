"""The MediaPipe hand landmarker model at run time: which file, and is it the one we expect (sha256).

mediapipe >= 0.10.30 ships no model files and run time must not reach a model hub (docs/architecture.md §6), so
``make setup`` builds the models (``scripts/provision_hand_model.py``, a setup step outside this package)
from what a package registry serves: the mediapipe 0.10.21 wheel on PyPI still carries the palm detector
and the hand landmark networks as plain .tflite files, repacked as Tasks bundles (uncompressed zips
holding ``hand_detector.tflite`` and ``hand_landmarks_detector.tflite``) byte-identical on every
machine. This module holds the pins (wheel, members, bundles) and the verification.

Users may instead point ``EGO_ASSETS_HAND_MODEL`` at any bundle (it replaces the ``full`` model),
e.g. Google's published ``hand_landmarker.task`` (float16, version 1, see :data:`OFFICIAL_URL`), whose
sha256 is known here.

Command line: ``python -m ego_assets.lib.hands.model [PATH] [--variant full|lite]`` verifies a file.

Two variants are built: ``full`` (``models/hand_landmarker.task``, the networks of the official
bundle, used by the ``mediapipe`` backend) and ``lite`` (``models/hand_landmarker_lite.task``, the
lite landmark network, ~40 % less CPU per hand, used by the ``mediapipe_lite`` backend).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import warnings
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ego_assets.lib import settings
from ego_assets.lib.keys import file_sha256

MODEL_ENV = settings.var("HAND_MODEL")
MODELS_DIR_ENV = settings.var("MODELS_DIR")  # where the default bundles live (default <repo>/models)
MODEL_FILENAME = "hand_landmarker.task"

# The registry artifact the bundle is built from (pinned: the build is reproducible only from it).
WHEEL_PROJECT = "mediapipe"
WHEEL_VERSION = "0.10.21"
WHEEL_PYTHON = "3.11"
WHEEL_PLATFORM = "manylinux_2_28_x86_64"
WHEEL_FILENAME = f"mediapipe-{WHEEL_VERSION}-cp311-cp311-{WHEEL_PLATFORM}.whl"
WHEEL_SHA256 = "05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3"

_PALM_FULL = ("mediapipe/modules/palm_detection/palm_detection_full.tflite",
              "1b14e9422c6ad006cde6581a46c8b90dd573c07ab7f3934b5589e7cea3f89a54")


@dataclass(frozen=True)
class Variant:
    """One bundle we build: its default file name, its members (bundle name -> (path inside the
    wheel, sha256 of the bytes)) and the sha256 of the bundle _write_bundle makes of them."""

    name: str
    filename: str
    members: dict
    built_sha256: str
    description: str


VARIANTS: dict[str, Variant] = {
    "full": Variant(
        "full", MODEL_FILENAME,
        {"hand_detector.tflite": _PALM_FULL,
         "hand_landmarks_detector.tflite": (
             "mediapipe/modules/hand_landmark/hand_landmark_full.tflite",
             "11c272b891e1a99ab034208e23937a8008388cf11ed2a9d776ed3d01d0ba00e3")},
        "4e53be8637c6cb3cc416d000dc6691ede7675baf7f8e80fbca389d15df729b9a",
        f"built from the mediapipe {WHEEL_VERSION} wheel (palm_detection_full + hand_landmark_full)"),
    # the lite landmark network (~40 % less CPU per hand); the wheel's lite palm detector cannot be
    # used: it lacks the normalization metadata the Tasks API requires
    "lite": Variant(
        "lite", "hand_landmarker_lite.task",
        {"hand_detector.tflite": _PALM_FULL,
         "hand_landmarks_detector.tflite": (
             "mediapipe/modules/hand_landmark/hand_landmark_lite.tflite",
             "048edd3645c9bf7397d19a9f6e3a42957d6e414c9bea6598030a2e9b624156e6")},
        "dadad240166291e9b19d9b6a9fd3cc350ed9946e9f740682e84c7e8513cc08e5",
        f"built from the mediapipe {WHEEL_VERSION} wheel (palm_detection_full + hand_landmark_lite)"),
}
BUNDLE_MEMBERS = VARIANTS["full"].members

# Google's published bundle (7,819,105 bytes), the same file several public projects pin by this hash.
OFFICIAL_URL = ("https://storage.googleapis.com/mediapipe-models/hand_landmarker/hand_landmarker/"
                "float16/1/hand_landmarker.task")
OFFICIAL_SHA256 = "fbc2a30080c3c557093b5ddfc334698132eb341044ccee322ccf8bcf3607cde1"

KNOWN_MODELS: dict[str, str] = {v.built_sha256: v.description for v in VARIANTS.values()}
KNOWN_MODELS[OFFICIAL_SHA256] = "official hand_landmarker.task (float16/1)"

PROVISION_HINT = (f"run `make setup` (it runs scripts/provision_hand_model.py provision), or set "
                  f"{MODEL_ENV} to a hand landmarker bundle such as Google's {OFFICIAL_URL}")


class HandModelError(ValueError):
    """The hand model file is missing, unreadable or not the file we expect."""


def repo_root() -> Path:
    # ego_assets/lib/hands/model.py -> the checkout (or the site-packages parent when installed)
    return Path(__file__).resolve().parents[3]


def models_dir() -> Path:
    env = (settings.get("MODELS_DIR") or "")
    return Path(env) if env else repo_root() / "models"


def default_model_path(variant: str = "full") -> Path:
    return models_dir() / _variant(variant).filename


def _variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise HandModelError(f"model variant {name!r}: expected one of {', '.join(VARIANTS)}") from None


@lru_cache(maxsize=16)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(None, path)


def model_sha256(path: Path) -> str:
    """sha256 of a model file, cached per (path, size, mtime): resolve_model runs once per video."""
    st = Path(path).stat()
    return _sha256_cached(str(path), st.st_size, st.st_mtime_ns)


def bundle_member_hashes(path: Path) -> dict[str, str] | None:
    """sha256 of each member of a bundle, or None when the file is not an uncompressed zip."""
    try:
        with zipfile.ZipFile(path) as zf:
            if any(i.compress_type != zipfile.ZIP_STORED for i in zf.infolist()):
                return None
            return {i.filename: hashlib.sha256(zf.read(i)).hexdigest() for i in zf.infolist()}
    except (OSError, zipfile.BadZipFile):
        return None


def _is_our_bundle(path: Path, variant: str | None = None) -> bool:
    """True when the file holds exactly the pinned networks of a variant (any variant when None),
    even if another zip writer packed them."""
    hashes = bundle_member_hashes(path)
    variants = VARIANTS.values() if variant is None else [_variant(variant)]
    return any(hashes == {n: sha for n, (_, sha) in v.members.items()} for v in variants)


# -- the public API --------------------------------------------------------------------------------

def resolve_model(path: Path | str | None = None, variant: str = "full") -> Path:
    """The verified model file to load.

    ``path``, else (for the ``full`` variant only) ``$EGO_ASSETS_HAND_MODEL``, else the variant's
    default path. A file with a known sha256 (our builds, Google's official bundle) or holding exactly
    our pinned networks is accepted. A file named explicitly (argument or environment) with an unknown
    hash is accepted with a warning if it is a valid bundle, since the user chose it; its hash goes
    into the run's stats. Anything else, and a missing file, raises :class:`HandModelError` saying
    how to provision.
    """
    env = (settings.get("HAND_MODEL") or "") if variant == "full" else ""
    explicit = path is not None or bool(env)
    p = Path(path) if path is not None else (Path(env) if env else default_model_path(variant))
    origin = "argument" if path is not None else (MODEL_ENV if env else "default path")
    if not p.is_file():
        raise HandModelError(f"hand model {p} ({origin}): no such file; {PROVISION_HINT}")
    h = model_sha256(p)
    if h in KNOWN_MODELS or _is_our_bundle(p):
        return p
    members = bundle_member_hashes(p)
    if members is None or not {"hand_detector.tflite", "hand_landmarks_detector.tflite"} <= set(members):
        raise HandModelError(f"hand model {p} ({origin}): not a hand landmarker bundle (an uncompressed "
                             f"zip with hand_detector.tflite and hand_landmarks_detector.tflite), "
                             f"sha256 {h}; corrupt or wrong file: delete it and {PROVISION_HINT}")
    if not explicit:
        raise HandModelError(f"hand model {p}: sha256 {h} matches no known model (corrupt or "
                             f"modified): delete it and {PROVISION_HINT}")
    warnings.warn(f"hand model {p} ({origin}) has an unverified sha256 {h}; using it because it was "
                  f"named explicitly", stacklevel=2)
    return p


def model_info(path: Path) -> dict:
    """What to record about the model a run used (lineage / UI metadata)."""
    h = model_sha256(path)
    return {"model_path": str(path), "model_sha256": h, "model_kind": KNOWN_MODELS.get(h, "unverified")}


def main(argv: list[str] | None = None) -> int:
    """``python -m ego_assets.lib.hands.model [PATH] [--variant full|lite]``: verify a model file (default:
    what resolve_model() picks) and print what a run records about it (provisioning is a setup step:
    scripts/provision_hand_model.py)."""
    ap = argparse.ArgumentParser(prog="python -m ego_assets.lib.hands.model",
                                 description="Verify a MediaPipe hand landmarker model file.")
    ap.add_argument("path", nargs="?", type=Path, default=None)
    ap.add_argument("--variant", choices=list(VARIANTS), default="full")
    a = ap.parse_args(argv)
    try:
        print(json.dumps(model_info(resolve_model(a.path, a.variant))))
    except HandModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
