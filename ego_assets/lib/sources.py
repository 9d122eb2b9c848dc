"""The sources file (docs/architecture.md §10): which folders or buckets hold videos, with optional camera hints.

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

import logging
import os
import re
import stat
from dataclasses import dataclass, field

import fsspec
import yaml

from ego_assets.lib import settings
from ego_assets.lib.keys import content_id, file_sha256, partition_key, validate_source_name

DEFAULT_GLOB = "**/*.{mp4,MP4,mov,MOV,mkv,MKV,avi,AVI,webm,WEBM,m4v,M4V}"
DISTORTION_MODELS = ("fisheye", "radtan")
log = logging.getLogger(__name__)


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


def hints_digest(hints: dict | None) -> str:
    """A short, order-independent digest of camera hints (what a rerun compares)."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(hints or {}, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class Discovered:
    partition_key: str
    source: str
    uri: str
    name: str
    size_bytes: int
    hints: dict = field(default_factory=dict)
    license: str | None = None
    sha256: str | None = None
    hints_changed: bool = False  # an already registered video whose source's camera hints changed

    def record(self) -> dict:
        return dict(partition_key=self.partition_key, source=self.source, uri=self.uri, name=self.name,
                    size_bytes=self.size_bytes, hints=self.hints, license=self.license, sha256=self.sha256)


def _fs(url: str):
    """fsspec filesystem + path with a fresh listing: the sensor runs in a long-lived code server, and
    fsspec caches directory listings of object stores (new files would go unseen)."""
    fs, p = fsspec.core.url_to_fs(url)
    fs.invalidate_cache()
    return fs, p


def default_sources_path(home: str) -> str:
    return settings.get("SOURCES") or f"{home.rstrip('/')}/sources.yaml"


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


def _strip_proto(path: str) -> str:
    return path.split("://", 1)[1] if "://" in path else path


def _under(path: str, folder: str) -> bool:
    path, folder = _strip_proto(path).rstrip("/"), _strip_proto(folder).rstrip("/")
    return path == folder or path.startswith(folder + "/")


def list_files(src: Source, exclude: tuple[str, ...] | list[str] = (),
               skipped: list[str] | None = None) -> list[str]:
    """Files of a source as URLs/paths, sorted (deterministic discovery order). Files under a folder
    of ``exclude`` (the storage home: clips, proxies and dataset videos are the pipeline's own output,
    never sources) are left out."""
    return [uri for uri, _ in list_file_infos(src, exclude, skipped)]


def _followed(path: str, info: dict, src: Source, skipped: list[str] | None) -> dict | None:
    """A listing entry with a local symbolic link resolved: fsspec's local listing describes the link
    itself (type 'other', the link's own mtime), so a video linked into a source folder would be
    dropped, and a rewritten target would keep the link's stamp. The entry gets the target's type,
    size and mtime; a broken link is skipped with a note (``skipped`` and a logged warning)."""
    if not info.get("islink"):
        return info
    try:
        st = os.stat(path)  # follows the link (and chains of links)
    except OSError as e:
        note = (f"source {src.name!r}: skipped {path}: broken symbolic link to "
                f"{info.get('destination') or os.readlink(path)} ({e.strerror or e})")
        log.warning(note)
        if skipped is not None:
            skipped.append(note)
        return None
    kind = "file" if stat.S_ISREG(st.st_mode) else "directory" if stat.S_ISDIR(st.st_mode) else "other"
    return dict(info, type=kind, size=st.st_size, mtime=st.st_mtime)


def list_file_infos(src: Source, exclude: tuple[str, ...] | list[str] = (),
                    skipped: list[str] | None = None) -> list[tuple[str, dict]]:
    """:func:`list_files` with each file's listing entry (size, mtime or ETag): the listing's own
    details, so that stamping a file costs no request of its own (one LIST per 1,000 keys on S3).
    Symbolic links to files are followed (the entry is the target's); broken links are skipped and
    noted in ``skipped``."""
    fs, root = _fs(src.uri)
    if not fs.exists(root):
        raise SourcesError(f"source {src.name!r}: {src.uri} does not exist")
    root_info = _followed(root, fs.info(root), src, skipped)  # a source may be one (linked) file
    if root_info is not None and root_info.get("type") == "file":
        found = {root: root_info}
    else:
        # one recursive listing, matched against every pattern (a glob per pattern would list the
        # whole tree once per extension of the default glob)
        from fsspec.utils import glob_translate

        base = root.rstrip("/")
        patterns = [re.compile(glob_translate(f"{base}/{g}")) for g in _expand_braces(src.glob)]
        found = {f: _followed(f, info, src, skipped) for f, info in fs.find(base, detail=True).items()
                 if any(p.match(f) for p in patterns)}
        found = {f: info for f, info in found.items() if info is not None and info.get("type") == "file"}
    proto = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    local = proto in ("file", "local")
    out = sorted(((os.path.abspath(f) if local else f"{proto}://{f}", info) for f, info in found.items()),
                 key=lambda x: x[0])
    if exclude:
        ex = [os.path.realpath(e) if local and "://" not in e else e for e in exclude]
        out = [(f, i) for f, i in out if not any(_under(os.path.realpath(f) if local else f, e) for e in ex)]
    return out


def contains_home(src: Source, home: str) -> bool:
    """Whether the source folder holds the storage home (whose files are then not sources)."""
    fs, root = fsspec.core.url_to_fs(src.uri)
    local = "://" not in home
    if local:
        return _under(os.path.realpath(home), os.path.realpath(root)) and os.path.isdir(os.path.realpath(root))
    return _under(home, root)


def file_stamp(info: dict) -> str:
    """What says a file is unchanged since it was hashed: its size and modification time."""
    return f"{info.get('size')}:{info.get('mtime') or info.get('LastModified') or info.get('ETag')}"


def discover_file(src: Source, uri: str, identities: dict | None = None) -> Discovered:
    """A file's partition: its key comes from the SHA-256 of its whole content (two different files
    never share a key). ``identities`` (uri -> {"stamp", "sha256"}) caches the hash of files whose
    size and modification time have not changed; it is updated in place."""
    fs, p = fsspec.core.url_to_fs(uri)
    info = _followed(p, fs.info(p), src, None) or {}
    stamp = file_stamp(info)
    cached = (identities or {}).get(uri)
    if cached and cached.get("stamp") == stamp and cached.get("sha256"):
        sha = cached["sha256"]
    else:
        sha = file_sha256(fs, p)
        if identities is not None:
            identities[uri] = {"stamp": stamp, "sha256": sha}
    return Discovered(partition_key=partition_key(src.name, content_id(sha)), source=src.name, uri=uri,
                      name=os.path.basename(p), size_bytes=int(info.get("size") or 0), hints=src.hints(),
                      license=src.license, sha256=sha)


HASH_BUDGET_S = 30.0  # a sensor tick stops hashing new files after this long (Dagster's tick timeout is 60 s)


def discover(sources: list[Source], seen: dict[str, str], known_keys: set[str], limit: int,
             exclude: tuple[str, ...] | list[str] = (), budget_s: float | None = HASH_BUDGET_S):
    """New videos of every source, at most ``limit`` per call (the rest come next time).

    ``seen`` maps a file URI to its "source:size:mtime|hints" stamp from earlier calls, so unchanged
    files are not hashed again; it is returned updated. A registered video whose source's camera hints
    changed is returned again with ``hints_changed`` (its record is updated and what depends on the
    hints reruns). Files under ``exclude`` (the storage home) are never sources. Identity is the full
    SHA-256, so a new file is read whole: after ``budget_s`` seconds of hashing the call returns what
    it has, and the files not yet seen come next time. Returns (discoveries, seen, errors by source)."""
    import time

    t0, hashed = time.monotonic(), 0  # at least one file per call: each call makes progress
    new: list[Discovered] = []
    errors: dict[str, str] = {}
    seen = dict(seen)
    keys = set(known_keys)
    for src in sources:
        skipped: list[str] = []
        try:
            files = list_file_infos(src, exclude, skipped)
        except Exception as e:  # noqa: BLE001 - one unreachable source must not stop the others
            errors[src.name] = str(e)
            continue
        if skipped:  # reported (the sensor logs it), the source's other files go on
            errors[src.name] = "; ".join(skipped)
        for uri, info in files:  # the listing's size and mtime/ETag: no request per file
            if len(new) >= limit:
                return new, seen, errors
            file_part = f"{src.name}:{file_stamp(info)}"
            stamp = f"{file_part}|{hints_digest(src.hints())}"
            prev = seen.get(uri)
            if prev == stamp:
                continue
            if budget_s is not None and hashed and time.monotonic() - t0 > budget_s:
                return new, seen, errors  # the rest next call (their stamps are not recorded)
            d = discover_file(src, uri)
            hashed += 1
            seen[uri] = stamp
            if d.partition_key in keys:
                if prev is not None and prev.split("|")[0] == file_part:
                    d.hints_changed = True  # same file, same source: only its camera hints changed
                    new.append(d)
                continue  # the same video found twice (another name, another scan): adds nothing
            keys.add(d.partition_key)
            new.append(d)
    return new, seen, errors
