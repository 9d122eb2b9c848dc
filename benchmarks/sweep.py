"""The adversarial sweep of issue 16, as one script: bad inputs, hostile names and SQL, kill points,
concurrency, a read-only home and a full disk, run through the `ego-assets` command as a user would,
with one row per probe so that the next regression shows.

    .venv/bin/python benchmarks/sweep.py            # everything (about 6 min on a busy 2-core box)
    .venv/bin/python benchmarks/sweep.py --quick    # without the kill point and the concurrent runs
    .venv/bin/python benchmarks/sweep.py --keep DIR # keep the homes and inputs for a look

Every row says what was probed, what is expected, what was measured, PASS or FAIL, and the item of
issue 16 it belongs to. The exit status is 1 when a row of items 1, 2, 4, 5, 8 or 9 fails; the other
rows (kill points, concurrency: items owned elsewhere) are measured and reported, never fatal here.
Probes that need a private mount namespace (read-only home, full disk) run with `unshare -m` as root
and say why when they cannot.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent / "ego-assets"
GATING = {"1", "2", "4", "5", "8", "9"}  # the items this sweep guards (the others are reported)


@dataclass
class Row:
    item: str
    probe: str
    expected: str
    measured: str
    ok: bool | None  # None: could not be measured here (the reason is in `measured`)
    seconds: float = 0.0


ROWS: list[Row] = []


def row(item, probe, expected, measured, ok, t0=None):
    r = Row(item, probe, expected, str(measured).replace("\n", "\\n"), ok,
            0.0 if t0 is None else time.perf_counter() - t0)
    ROWS.append(r)
    mark = {True: "PASS", False: "FAIL", None: "n/a "}[ok]
    print(f"  [{mark}] {item:>3}  {probe}: {r.measured[:110]}", file=sys.stderr, flush=True)
    return r


def env_for(home: Path | None = None) -> dict:
    env = dict(os.environ)
    env.pop("DAGSTER_HOME", None)
    env.pop("EGO_ASSETS_HOME", None)
    if home is not None:
        env["EGO_ASSETS_HOME"] = str(home)
    return env


def ego(*args, cwd, home=None, timeout=900, prefix=()):
    return subprocess.run([*prefix, str(BIN), *args], cwd=cwd, env=env_for(home), capture_output=True,
                          text=True, timeout=timeout)


def ego_here(*args):
    """The command in this process (no interpreter start): (exit status, stdout, stderr)."""
    import contextlib
    import io

    from ego_assets import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(list(args))
    return subprocess.CompletedProcess(args, rc, out.getvalue(), err.getvalue())


def video_lines(r) -> list[str]:
    return [ln for ln in r.stdout.splitlines() if ln.startswith(("ok", "FAILED"))]


def has_unshare() -> str | None:
    """None when `unshare -m` with mounts works here, else the reason."""
    if os.geteuid() != 0:
        return "needs root for a private mount namespace (unshare -m)"
    if not shutil.which("unshare"):
        return "unshare (util-linux) is missing"
    r = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
                       capture_output=True, text=True)
    return None if r.returncode == 0 else f"unshare -m cannot mount here: {r.stderr.strip()[:80]}"


# -- item 1: identity ------------------------------------------------------------------------------
def sweep_keys(work: Path) -> None:
    import numpy as np

    from ego_assets.lib.sources import Source, discover_file

    t0 = time.perf_counter()
    d = work / "keys"
    d.mkdir()
    data = np.random.default_rng(0).integers(0, 256, 16 << 20, dtype=np.uint8).tobytes()
    other = bytearray(data)
    other[3 << 20:(3 << 20) + 200_000] = bytes(200_000)
    (d / "a.mp4").write_bytes(data)
    (d / "b.mp4").write_bytes(bytes(other))
    src = Source(name="k", uri=str(d))
    ka, kb = (discover_file(src, str(d / n)).partition_key for n in ("a.mp4", "b.mp4"))
    row("1", "two 16 MiB files, 200 KB zeroed at 3 MiB", "different keys",
        f"{ka[-8:]} vs {kb[-8:]}", ka != kb, t0)
    shutil.copy(d / "a.mp4", d / "copy.mp4")
    kc = discover_file(src, str(d / "copy.mp4")).partition_key
    row("1", "the same file under another name", "the same key", "same" if kc == ka else "different",
        kc == ka)
    full = hashlib.sha256(data).hexdigest()
    row("1", "key content id", "a prefix of the full SHA-256", ka.split("-", 1)[1],
        full.startswith(ka.split("-", 1)[1]))


# -- inputs ----------------------------------------------------------------------------------------
def make_inputs(folder: Path) -> dict[str, tuple[str, str]]:
    """Files -> (expected outcome, item). 'ingest' = passes source_videos, clips and frames."""
    from ego_assets_tests.helpers import synth

    folder.mkdir(parents=True)
    bad = synth.make_bad_files(folder)
    out = {p.name: ("fails at source_videos naming the file", "8") for p in bad.values()}
    # valid videos in four codecs, each under a hostile name (newline, tab, quotes, '..', 240 chars)
    good = {("x" * 240) + ".mp4": ("libx264", "mp4", "yuv420p"),
            "vp8\nnew line.webm": ("libvpx", "webm", "yuv420p"),
            "prores ' \" ; drop.mov": ("prores_ks", "mov", "yuv422p10le"),
            "..%2F..%2Fescape\tmjpeg é.avi": ("mjpeg", "avi", "yuvj420p")}
    for i, (name, (codec, fmt, pix)) in enumerate(good.items()):
        synth.make_encoded_video(folder / name, codec, fmt, n_frames=20, fps=20, seed=i + 1, pix_fmt=pix)
        out[name] = ("ingest", "9")
    return out


INGEST = ("source_videos", "clips", "frames")
ASSETS = INGEST + ("calibrations", "hand_tracks", "camera_poses", "segments", "captions", "lerobot_episodes")


def sweep_inputs(work: Path) -> Path:
    """One run over bad, foreign-codec and hostile-name files with the default home inside the folder,
    then a second run from the same folder with a camera hint."""
    from ego_assets.cli import printable
    from ego_assets.lib.storage import Store

    folder = work / "inputs"
    expected = make_inputs(folder)
    home = folder / ".ego_assets"
    t0 = time.perf_counter()
    r = ego("run", ".", "--source", "sweep", cwd=folder)
    lines = video_lines(r)
    row("8", "one line per video (names with newline, tab, quotes, '..', 240 chars)",
        f"{len(expected)} lines",
        f"{len(lines)} lines, exit {r.returncode}", len(lines) == len(expected), t0)
    for name, (want, item) in expected.items():
        shown = printable(str(folder / name))
        line = next((ln for ln in lines if shown in ln), None)
        if line is None:
            row(item, f"input {printable(name)[:40]}", want, "no line names the file", False)
        elif want == "ingest":
            at = next((a for a in ASSETS if f": {a}:" in line), None)
            row(item, f"input {printable(name)[:40]}", "passes ingest and calibrations",
                line[:8].strip() + (f" at {at}" if at else ""), at not in INGEST + ("calibrations",))
        else:
            ok = line.startswith("FAILED") and ": source_videos:" in line
            row(item, f"input {printable(name)[:40]}", want, line.split(": ", 1)[-1][-70:], ok)
    row("8", "no traceback on stderr", "none", "Traceback" if "Traceback" in r.stderr else "none",
        "Traceback" not in r.stderr)
    store = Store(str(home))
    inside = all(p.resolve().is_relative_to(home.resolve()) for p in (home / "artifacts").rglob("*"))
    row("8", "artifacts of hostile names", "inside the home", "inside" if inside else "OUTSIDE", inside)
    n1 = len(store.registered())
    t0 = time.perf_counter()
    r2 = ego("run", ".", "--source", "sweep", "--hfov-deg", "110", cwd=folder)
    n2 = len(store.registered())
    row("4", "second `run .` with the home inside the folder", f"{n1} videos, a note",
        f"{n2} videos, note {'yes' if 'contains the storage home' in r2.stderr else 'no'}",
        n2 == n1 and "contains the storage home" in r2.stderr, t0)
    hf = []
    for pk in store.registered():
        if store.has_table("calibrations", pk):
            hf.append(round(store.read_table("calibrations", pk).column("hfov_deg")[0].as_py(), 1))
    row("5", "--hfov-deg 110 on a rerun", "every calibration at 110 deg",
        f"{hf.count(110.0)}/{len(hf)} at 110", bool(hf) and all(h == 110.0 for h in hf))
    return home


# -- item 2: hostile SQL ---------------------------------------------------------------------------
def sweep_sql(home: Path, work: Path) -> None:
    from ego_assets.lib.storage import Store

    store = Store(str(home))
    pk = store.partitions("frames")[0]
    frames = store.table_path("frames", pk)
    before = store.read_table("frames", pk).num_rows
    secret = work / "secret.txt"
    secret.write_text("s3cret\n")
    sources_yaml = home / "sources.yaml"
    sources_yaml.write_text("sources: []\n")
    attacks = {
        "COPY over a committed table": f"copy (select 1 as bogus) to '{frames}' (format parquet)",
        "COPY over sources.yaml": f"copy (select 1) to '{sources_yaml}' (format csv)",
        "ATTACH a new file": f"attach '{work / 'x.duckdb'}' (read_write)",
        "INSTALL an extension": "install httpfs",
        "read_text outside the home": f"select * from read_text('{secret}')",
        "read_text /etc/passwd": "select * from read_text('/etc/passwd')",
        "glob the filesystem": "select * from glob('/etc/*')",
        "two statements": "select 1; drop view frames",
        "SET to undo the sandbox": "set enable_external_access = true",
    }
    for what, sql in attacks.items():
        r = ego_here("catalog", sql, "--home", str(home))
        leaked = "s3cret" in r.stdout or "root:" in r.stdout
        row("2", what, "refused (exit 1, one line)", f"exit {r.returncode}: {r.stderr.strip()[:70]}",
            r.returncode == 1 and not leaked and len(r.stderr.strip().splitlines()) == 1)
    after = store.read_table("frames", pk).num_rows
    row("2", "committed data after the attacks", f"{before} rows, sources.yaml intact, no x.duckdb",
        f"{after} rows", after == before and sources_yaml.read_text() == "sources: []\n"
        and not (work / "x.duckdb").exists())
    r = ego_here("catalog", "select count(*) from frames", "--home", str(home), "--format", "csv")
    row("2", "a plain SELECT", "works", r.stdout.strip().replace("\n", " ")[:40], r.returncode == 0)


# -- item 8: gates ----------------------------------------------------------------------------------
def sweep_gates(home: Path, work: Path, ns_reason: str | None) -> None:
    from ego_assets.lib.sources import Source, discover_file
    from ego_assets.lib.storage import Store
    from ego_assets_tests.helpers import synth

    h = work / "no_dataset"
    store = Store(str(h))
    synth.make_video(work / "one.mp4", n_frames=10)
    d = discover_file(Source(name="g", uri=str(work)), str(work / "one.mp4"))
    store.register_video(d.partition_key, d.record())
    store.write_lineage(dict(partition_key="dataset", asset="lerobot_dataset", run_id="r", code_version="2",
                             data_version=None, upstream=None, params=None, status="failed",
                             error="OSError: [Errno 28] No space left on device"))
    r = ego_here("check", "--home", str(h))
    row("8", "check on a home whose dataset step failed", "exit 1, dataset_exists ERROR",
        f"exit {r.returncode}, {'dataset_exists' if 'dataset_exists' in r.stdout else 'no dataset line'}",
        r.returncode == 1 and "dataset_exists" in r.stdout)
    if ns_reason:
        row("8", "read-only home", "one line", ns_reason, None)
        row("8", "full disk", "one line naming the file", ns_reason, None)
        return
    ro = ["unshare", "-m", "sh", "-c", 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" && exec "$@"',
          str(home)]
    for cmd in (["run", str(work / "one.mp4"), "--source", "ro", "--home", str(home)],
                ["check", "--home", str(home)]):
        r = ego(*cmd, cwd=work, prefix=ro)
        err = [ln for ln in r.stderr.splitlines() if ln.startswith(("error", "note"))]
        row("8", f"read-only home: {cmd[0]}", "no traceback; one line says why",
            (err[0] if err else r.stderr.strip()[-80:])[:90], "Traceback" not in r.stderr and bool(err))
    big = work / "disk"
    big.mkdir()
    synth.make_video(big / "big.mp4", n_frames=120, fps=30, size=(1280, 720), seed=11)
    full = work / "full_home"
    full.mkdir()
    t0 = time.perf_counter()
    tmpfs = ["unshare", "-m", "sh", "-c", 'mount -t tmpfs -o size=3m tmpfs "$0" && exec "$@"', str(full)]
    r = ego("run", str(big), "--source", "disk", "--home", str(full), cwd=work, prefix=tmpfs)
    text = r.stdout + r.stderr
    said = next((ln for ln in text.splitlines() if "No space left" in ln or "disk is full" in ln), "")
    row("8", "full disk (3 MB tmpfs home)", "exit 1, no traceback, a line naming the file",
        f"exit {r.returncode}: {said[-90:] or text.strip()[-90:]}",
        r.returncode == 1 and "Traceback" not in text and bool(said) and "/" in said, t0)


# -- kill points and concurrency (reported) -------------------------------------------------------
def sweep_kill(work: Path) -> None:
    import pyarrow.parquet as pq

    from ego_assets_tests.helpers import synth

    folder = work / "kill"
    folder.mkdir()
    synth.make_video(folder / "long.mp4", n_frames=300, fps=30, size=(960, 540), gop=30)
    home = work / "kill_home"
    t0 = time.perf_counter()
    p = subprocess.Popen([str(BIN), "run", str(folder), "--source", "kill"], env=env_for(home),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    staging = home / ".staging" / "frames"
    deadline = time.time() + 300
    killed = False
    while time.time() < deadline and p.poll() is None:
        if staging.exists() and any(staging.glob("*/proxy.mp4")):
            time.sleep(0.3)
            os.killpg(p.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.05)
    p.wait(timeout=60)
    if not killed:
        row("kill", "SIGKILL while frames writes its proxy", "killed mid-write", "finished first", None, t0)
        return
    r = ego("run", str(folder), "--source", "kill", home=home, cwd=work)
    lines = video_lines(r)
    frames = list((home / "artifacts" / "frames").glob("*/frames.parquet"))
    n = pq.read_table(frames[0]).num_rows if frames else 0
    left = list(staging.glob("*")) if staging.exists() else []
    row("kill", "SIGKILL in frames, then rerun", "100 frames, no staging left, no early failure",
        f"{n} frames, {len(left)} leftovers, {lines[0][:60] if lines else 'no line'}",
        n == 100 and not left and bool(lines) and not any(f": {a}:" in lines[0] for a in INGEST), t0)


def sweep_concurrency(work: Path) -> None:
    import pyarrow.parquet as pq

    from ego_assets_tests.helpers import synth

    folder = work / "conc"
    folder.mkdir()
    for i in range(2):
        synth.make_video(folder / f"c{i}.mp4", n_frames=20, fps=20, seed=30 + i)
    home = work / "conc_home"
    t0 = time.perf_counter()
    procs = [subprocess.Popen([str(BIN), "run", str(folder), "--source", "conc"], env=env_for(home),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    rcs = [p.returncode for p in procs]
    tb = any("Traceback" in e for _, e in outs)
    frames = [pq.read_table(f).num_rows for f in (home / "artifacts" / "frames").glob("*/frames.parquet")]
    regs = len(list((home / "registry").glob("*.json")))
    row("conc", "two `run` at once, same home and folder", "both end (0/1), no traceback, 2 videos x 10 frames",
        f"exit {rcs}, {regs} videos, frames {sorted(frames)}{', TRACEBACK' if tb else ''}",
        all(rc in (0, 1) for rc in rcs) and not tb and regs == 2 and sorted(frames) == [10, 10], t0)


def print_table() -> None:
    cols = ("item", "probe", "expected", "measured", "result", "s")
    cells = [cols] + [(r.item, r.probe[:48], r.expected[:44], r.measured[:64],
                       {True: "PASS", False: "FAIL", None: "n/a"}[r.ok], f"{r.seconds:.0f}" if r.seconds else "")
                      for r in ROWS]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    for j, c in enumerate(cells):
        print("  ".join(v.ljust(w) for v, w in zip(c, widths)))
        if j == 0:
            print("  ".join("-" * w for w in widths))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="skip the kill point and the concurrent runs")
    ap.add_argument("--keep", help="work in this folder and keep it")
    args = ap.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="ego_sweep_")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    ns_reason = has_unshare()
    try:
        print(f"sweep in {work}", file=sys.stderr)
        sweep_keys(work)
        home = sweep_inputs(work)
        sweep_sql(home, work)
        sweep_gates(home, work, ns_reason)
        if not args.quick:
            sweep_kill(work)
            sweep_concurrency(work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print_table()
    failed = [r for r in ROWS if r.ok is False and r.item in GATING]
    other = [r for r in ROWS if r.ok is False and r.item not in GATING]
    print(f"\n{len(ROWS)} probes in {time.perf_counter() - t_all:.0f} s: "
          f"{sum(r.ok is True for r in ROWS)} pass, {len(failed)} fail (items {sorted(GATING)}), "
          f"{len(other)} fail elsewhere (reported), {sum(r.ok is None for r in ROWS)} not measurable here")
    print(json.dumps({"failed": [f"{r.item}: {r.probe}" for r in failed]}), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
