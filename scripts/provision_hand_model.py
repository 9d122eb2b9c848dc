"""Setup step: provision the MediaPipe hand landmarker models (run by ``make setup``, the Makefile's
``$(MODEL)`` target, and by the Dockerfile). Not part of the runtime package: at run time ego_assets only
verifies a model (``ego_assets.lib.hands.model``) and never reaches a package index or a model hub.

mediapipe >= 0.10.30 ships no model files, so the bundles are built from what a package registry serves:
the pinned mediapipe 0.10.21 wheel on PyPI carries the palm detector and the hand landmark networks as
plain .tflite files. A Tasks ``.task`` file is an *uncompressed* zip holding ``hand_detector.tflite`` and
``hand_landmarks_detector.tflite``; we repack the two networks under those names with fixed timestamps
and attributes, so the bundle is byte-identical on every machine and pinned by its sha256 (the wheel,
every member and every bundle are checked; a mismatch is an error naming the file).

The wheel comes from ``pip download`` (it honours pip.conf mirrors), else from the package index's
simple API (PEP 691 JSON or PEP 503 HTML, ``PIP_INDEX_URL``/``UV_INDEX_URL`` select a mirror) through
httpx: uv environments have no pip.

    python scripts/provision_hand_model.py provision [--dest PATH] [--variant full|lite]
                                                     [--wheel WHEEL] [--from-file TASK]
    python scripts/provision_hand_model.py verify [PATH] [--variant full|lite]
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
import zipfile
from pathlib import Path

import httpx

if __package__ in (None, ""):  # run as a script: the checkout's root on the path (for `scripts.`)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ego_assets.lib.hands import model as hm  # noqa: E402
from ego_assets.lib.keys import file_sha256  # noqa: E402

# Fixed zip metadata: the DOS epoch, Unix 'rw-r--r--' regular files.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_ZIP_ATTR = (0o100644 << 16)


class ProvisionError(RuntimeError):
    """The model could not be built (no wheel obtainable, or the wheel's contents are not as pinned)."""


def _sha256(path) -> str:
    return file_sha256(None, path)


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
    members = hm.BUNDLE_MEMBERS if members is None else members
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


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ego_assets" / "wheels"


def _valid_wheel(path: Path) -> bool:
    return path.is_file() and _sha256(path) == hm.WHEEL_SHA256


def _pip_download(dest_dir: Path) -> Path | None:
    """``pip download`` of the pinned wheel, if some pip is available (it honours pip.conf mirrors)."""
    args = ["download", "--no-deps", "--only-binary=:all:", "--python-version", hm.WHEEL_PYTHON,
            "--platform", hm.WHEEL_PLATFORM, f"{hm.WHEEL_PROJECT}=={hm.WHEEL_VERSION}", "-d", str(dest_dir)]
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
        wheel = dest_dir / hm.WHEEL_FILENAME
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
    """Fetch the wheel through the package index's simple API: for machines with no pip at all (uv
    environments). ``PIP_INDEX_URL``/``UV_INDEX_URL`` select a mirror; the pinned sha256 is checked
    either way."""
    index = (os.environ.get("PIP_INDEX_URL") or os.environ.get("UV_INDEX_URL")
             or "https://pypi.org/simple").rstrip("/")
    page = f"{index}/{hm.WHEEL_PROJECT}/"
    with httpx.Client(follow_redirects=True, timeout=httpx.Timeout(60.0, read=300.0)) as client:
        r = client.get(page, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        r.raise_for_status()
        url = _find_file_url(r.text, hm.WHEEL_FILENAME)
        if url is None:
            raise ProvisionError(f"package index {index}: lists no {hm.WHEEL_FILENAME}")
        url = urllib.parse.urljoin(page, url.split("#", 1)[0])
        wheel = dest_dir / hm.WHEEL_FILENAME
        tmp = wheel.with_suffix(".part")
        with client.stream("GET", url) as resp, open(tmp, "wb") as f:
            resp.raise_for_status()
            for chunk in resp.iter_bytes(1 << 20):
                f.write(chunk)
    os.replace(tmp, wheel)
    if not _valid_wheel(wheel):
        wheel.unlink(missing_ok=True)
        raise ProvisionError(f"{url}: downloaded wheel does not have the pinned sha256 {hm.WHEEL_SHA256}")
    return wheel


def obtain_wheel(cache_dir: Path | None = None) -> Path:
    """The pinned mediapipe wheel: from the cache, else downloaded (pip, else the index API)."""
    cache = Path(cache_dir) if cache_dir else _cache_dir()
    cached = cache / hm.WHEEL_FILENAME
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
    except (OSError, ValueError, ProvisionError, httpx.HTTPError) as e:
        errors.append(f"index: {e}")
    raise ProvisionError(f"could not obtain {hm.WHEEL_FILENAME} ({'; '.join(errors)}); download it with "
                         f"`pip download --no-deps --only-binary=:all: --python-version {hm.WHEEL_PYTHON} "
                         f"--platform {hm.WHEEL_PLATFORM} {hm.WHEEL_PROJECT}=={hm.WHEEL_VERSION} -d DIR` and pass "
                         f"--wheel DIR/{hm.WHEEL_FILENAME}")


def _provision_one(dest: Path, variant: hm.Variant, wheel: Path | None, from_file: Path | None, log) -> Path:
    if dest.is_file():
        h = hm.model_sha256(dest)
        if h in hm.KNOWN_MODELS or hm._is_our_bundle(dest, variant.name):
            log(f"hand model ok: {dest} ({hm.KNOWN_MODELS.get(h, variant.description)}, sha256 {h})")
            return dest
        log(f"hand model at {dest} has unknown sha256 {h}: rebuilding it")
    if from_file is not None:
        h = _sha256(Path(from_file))
        if h not in hm.KNOWN_MODELS:
            raise ProvisionError(f"{from_file}: sha256 {h} is not a known hand model "
                                 f"(known: {', '.join(hm.KNOWN_MODELS.values())}); to use it anyway set "
                                 f"{hm.MODEL_ENV}={from_file}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.copyfile(from_file, tmp)
        os.replace(tmp, dest)
    else:
        build_bundle(Path(wheel) if wheel else obtain_wheel(), dest, variant.members)
    h = _sha256(dest)
    if h not in hm.KNOWN_MODELS and not hm._is_our_bundle(dest, variant.name):
        raise ProvisionError(f"{dest}: bundle has sha256 {h}, which matches no known model")
    log(f"hand model provisioned: {dest} (sha256 {h})")
    return dest


def provision(dest: Path | None = None, wheel: Path | None = None, from_file: Path | None = None,
              variants: tuple[str, ...] | None = None, log=print) -> list[Path]:
    """Make sure verified models are in place; returns their paths.

    Without ``dest``, every variant (default: all of :data:`hm.VARIANTS`) goes to its default path under
    ``$EGO_ASSETS_MODELS_DIR``, default ``<repo>/models/`` (an installed, non-editable package should
    set it, e.g. in a container image); with ``dest``, one variant (default ``full``) goes there.
    Idempotent: a file already there with a known hash is left alone (one sha256 each, ~20 ms).
    ``from_file`` copies a bundle the user downloaded (it must have a known hash, e.g. the official
    one) as the ``full`` model; otherwise bundles are built from ``wheel``, or from the pinned wheel,
    fetched once.
    """
    names = tuple(variants) if variants else (("full",) if (dest or from_file) else tuple(hm.VARIANTS))
    if dest is not None and len(names) != 1:
        raise ProvisionError(f"--dest names one file but {len(names)} variants were asked for")
    if from_file is not None and names != ("full",):
        raise ProvisionError("--from-file provides the full model only")
    out = []
    for name in names:
        v = hm._variant(name)
        out.append(_provision_one(Path(dest) if dest else hm.default_model_path(name), v, wheel, from_file, log))
        if wheel is None and from_file is None and not out[-1].is_file():
            break
    return out




def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/provision_hand_model.py",
                                 description="Provision or verify the MediaPipe hand landmarker models.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("provision", help="build or copy the models (idempotent)")
    p.add_argument("--dest", type=Path, default=None,
                   help=f"one file for one variant (default: every variant under {hm.models_dir()}, "
                        f"${hm.MODELS_DIR_ENV} overrides)")
    p.add_argument("--variant", choices=list(hm.VARIANTS), action="append", default=None,
                   help="variant(s) to provision (default: all; full with --dest or --from-file)")
    p.add_argument("--wheel", type=Path, default=None, help=f"a local {hm.WHEEL_FILENAME}")
    p.add_argument("--from-file", type=Path, default=None, help="a downloaded official hand_landmarker.task")
    v = sub.add_parser("verify", help="check a model file (default: what resolve_model() picks)")
    v.add_argument("path", nargs="?", type=Path, default=None)
    v.add_argument("--variant", choices=list(hm.VARIANTS), default="full")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "provision":
            provision(a.dest, a.wheel, a.from_file, tuple(a.variant) if a.variant else None)
        else:
            print(json.dumps(hm.model_info(hm.resolve_model(a.path, a.variant))))
    except (hm.HandModelError, ProvisionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
