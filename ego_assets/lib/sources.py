"""The sources file (DESIGN §10): which folders or buckets hold videos, with optional camera hints.

```yaml
sources:
  - name: kitchen_gopro          # [a-z0-9_-]; becomes part of the partition keys
    uri: /data/kitchen           # a folder or an fsspec URL (s3://bucket/prefix)
    glob: "**/*.mp4"             # default: common video extensions, recursively
    hfov_deg: 118                # optional camera hint, or:
    intrinsics: [fx, fy, cx, cy] # at the source resolution, with
    distortion: {model: fisheye, coeffs: [k1, k2, k3, k4]}
    license: CC-BY-4.0           # optional, copied into the dataset card
```
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import fsspec
import yaml

from ego_assets.lib.keys import file_content_id, partition_key, validate_source_name

DEFAULT_GLOB = "**/*.{mp4,MP4,mov,MOV,mkv,MKV,avi,AVI,webm,WEBM,m4v,M4V}"
DISTORTION_MODELS = ("fisheye", "radtan")


class SourcesError(ValueError):
    pass


@dataclass
class Source:
    name: str
    uri: str
    glob: str = DEFAULT_GLOB
    hfov_deg: float | None = None
    intrinsics: list[float] | None = None
    distortion: dict | None = None
    license: str | None = None

    def hints(self) -> dict:
        return {k: v for k, v in dict(hfov_deg=self.hfov_deg, intrinsics=self.intrinsics,
                                      distortion=self.distortion).items() if v is not None}


@dataclass
class Discovered:
    partition_key: str
    source: str
    uri: str
    name: str
    size_bytes: int
    hints: dict = field(default_factory=dict)
    license: str | None = None

    def record(self) -> dict:
        return dict(partition_key=self.partition_key, source=self.source, uri=self.uri, name=self.name,
                    size_bytes=self.size_bytes, hints=self.hints, license=self.license)


def _fs(url: str):
    """fsspec filesystem + path with a fresh listing: the sensor runs in a long-lived code server, and
    fsspec caches directory listings of object stores (new files would go unseen)."""
    fs, p = fsspec.core.url_to_fs(url)
    fs.invalidate_cache()
    return fs, p


def default_sources_path(home: str) -> str:
    return os.environ.get("EGO_ASSETS_SOURCES") or f"{home.rstrip('/')}/sources.yaml"


def _check_source(d: dict, where: str) -> Source:
    if not isinstance(d, dict) or "name" not in d or "uri" not in d:
        raise SourcesError(f"{where}: each source needs 'name' and 'uri'")
    unknown = set(d) - {"name", "uri", "glob", "hfov_deg", "intrinsics", "distortion", "license"}
    if unknown:
        raise SourcesError(f"{where}: unknown keys {sorted(unknown)} in source {d.get('name')!r}")
    try:
        validate_source_name(d["name"])
    except ValueError as e:
        raise SourcesError(f"{where}: {e}") from None
    src = Source(**d)
    if src.hfov_deg is not None and not (10 <= float(src.hfov_deg) < 180):
        raise SourcesError(f"{where}: source {src.name!r}: hfov_deg must be in [10, 180)")
    if src.intrinsics is not None and (len(src.intrinsics) != 4 or min(src.intrinsics[:2]) <= 0):
        raise SourcesError(f"{where}: source {src.name!r}: intrinsics must be [fx, fy, cx, cy], fx, fy > 0")
    if src.distortion is not None:
        if src.intrinsics is None:
            raise SourcesError(f"{where}: source {src.name!r}: distortion needs intrinsics")
        if src.distortion.get("model") not in DISTORTION_MODELS:
            raise SourcesError(f"{where}: source {src.name!r}: distortion model must be one of "
                               f"{DISTORTION_MODELS}")
    return src


def load_sources(path: str) -> list[Source]:
    """Parse a sources file; a missing file means no sources. Errors name the file and the problem."""
    fs, p = _fs(path)
    if not fs.exists(p):
        return []
    try:
        doc = yaml.safe_load(fs.cat_file(p)) or {}
    except yaml.YAMLError as e:
        raise SourcesError(f"{path}: not valid YAML: {e}") from None
    items = doc.get("sources", []) if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise SourcesError(f"{path}: expected a mapping with a 'sources' list")
    out = [_check_source(d, path) for d in items]
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise SourcesError(f"{path}: duplicate source names")
    return out


def save_sources(path: str, sources: list[Source]) -> None:
    fs, p = _fs(path)
    doc = {"sources": [{k: v for k, v in s.__dict__.items() if v is not None} for s in sources]}
    fs.makedirs(os.path.dirname(p) or ".", exist_ok=True)
    fs.pipe_file(p, yaml.safe_dump(doc, sort_keys=False).encode())


def _expand_braces(glob: str) -> list[str]:
    if "{" not in glob:
        return [glob]
    pre, rest = glob.split("{", 1)
    alts, post = rest.split("}", 1)
    return [g for a in alts.split(",") for g in _expand_braces(pre + a + post)]


def list_files(src: Source) -> list[str]:
    """Files of a source as URLs/paths, sorted (deterministic discovery order)."""
    fs, root = _fs(src.uri)
    if not fs.exists(root):
        raise SourcesError(f"source {src.name!r}: {src.uri} does not exist")
    if fs.isfile(root):
        found = [root]
    else:
        found = set()
        for g in _expand_braces(src.glob):
            found.update(fs.glob(f"{root.rstrip('/')}/{g}"))
        found = [f for f in found if fs.isfile(f)]
    proto = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    local = proto in ("file", "local")
    return sorted(os.path.abspath(f) if local else f"{proto}://{f}" for f in found)


def discover_file(src: Source, uri: str) -> Discovered:
    fs, p = _fs(uri)
    cid = file_content_id(fs, p)
    return Discovered(partition_key=partition_key(src.name, cid), source=src.name, uri=uri,
                      name=os.path.basename(p), size_bytes=fs.size(p), hints=src.hints(),
                      license=src.license)


def discover(sources: list[Source], seen: dict[str, str], known_keys: set[str], limit: int):
    """New videos of every source, at most ``limit`` per call (the rest come next time).

    ``seen`` maps a file URI to its "size:mtime" stamp from earlier calls, so unchanged files are not
    hashed again; it is returned updated. Returns (new discoveries, seen, errors by source)."""
    new: list[Discovered] = []
    errors: dict[str, str] = {}
    seen = dict(seen)
    keys = set(known_keys)
    for src in sources:
        try:
            files = list_files(src)
        except Exception as e:  # noqa: BLE001 - one unreachable source must not stop the others
            errors[src.name] = str(e)
            continue
        for uri in files:
            if len(new) >= limit:
                return new, seen, errors
            # list_files has just refreshed this filesystem's listings: no fresh invalidation per file
            fs, p = fsspec.core.url_to_fs(uri)
            try:
                info = fs.info(p)
            except FileNotFoundError:
                continue
            stamp = f"{src.name}:{info.get('size')}:{info.get('mtime') or info.get('LastModified')}"
            if seen.get(uri) == stamp:
                continue
            d = discover_file(src, uri)
            seen[uri] = stamp
            if d.partition_key in keys:
                continue  # the same video found twice (another name, another scan): adds nothing
            keys.add(d.partition_key)
            new.append(d)
    return new, seen, errors
