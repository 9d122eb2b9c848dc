"""Issue 16: what an adversarial sweep found in `ego-assets run` and `check`, reproduced through the CLI.

One source folder holds the default home (`./.ego_assets`, the pipeline's own clips, proxies and dataset
videos), a VP8 WebM whose name has a newline, a ProRes MOV and an H.264 MP4. It is run twice: the second
time from inside the folder again and with a camera hint."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ego_assets import cli
from ego_assets.lib.storage import Store
from ego_assets_tests.helpers import synth

BIN = Path(sys.executable).parent
EARLY = ("source_videos", "clips", "frames", "calibrations")  # what these synthetic videos must pass


def _env(**kw):
    env = dict(os.environ, **kw)
    for k in ("EGO_ASSETS_HOME", "DAGSTER_HOME"):
        if k not in kw:
            env.pop(k, None)
    return env


def _ego(*args, cwd, **env):
    return subprocess.run([str(BIN / "ego-assets"), *args], cwd=cwd, env=_env(**env), capture_output=True,
                          text=True, timeout=900)


@pytest.fixture(scope="module")
def adv(tmp_path_factory):
    src = tmp_path_factory.mktemp("adv") / "src"
    src.mkdir()
    synth.make_video(src / "plain.mp4", n_frames=20, fps=20, seed=1)
    synth.make_encoded_video(src / "vp8\nclip.webm", "libvpx", "webm", n_frames=20, fps=20, seed=2)
    synth.make_encoded_video(src / "prores.mov", "prores_ks", "mov", n_frames=20, fps=20, seed=3,
                             pix_fmt="yuv422p10le")
    first = _ego("run", ".", "--source", "adv", cwd=src)       # default home: ./.ego_assets, inside
    second = _ego("run", ".", "--source", "adv", "--hfov-deg", "110", cwd=src)
    return dict(src=src, home=src / ".ego_assets", first=first, second=second)


def _video_lines(r):
    return [ln for ln in r.stdout.splitlines() if ln.strip()]


def test_every_codec_passes_ingest_and_a_newline_name_stays_on_one_line(adv):
    r = adv["first"]
    lines = _video_lines(r)
    assert len(lines) == 3, r.stdout + r.stderr[-3000:]  # one line per video, the newline escaped
    assert any("vp8\\nclip.webm" in ln for ln in lines)
    for ln in lines:
        assert ln.startswith(("ok", "FAILED")) and not any(f": {a}:" in ln for a in EARLY), ln
    store = Store(str(adv["home"]))
    exts = sorted(p.suffix for p in (adv["home"] / "artifacts" / "clips").rglob("clip_*"))
    assert exts == [".mkv", ".mkv", ".mp4"]  # VP8 and ProRes remuxed into Matroska, H.264 into MP4
    for pk in store.registered():
        assert store.read_table("frames", pk).num_rows == 10  # 1 s at 10 Hz


def test_the_home_inside_the_source_folder_is_never_a_source(adv):
    r = adv["second"]
    assert len(_video_lines(r)) == 3, r.stdout + r.stderr[-3000:]
    assert "contains the storage home" in r.stderr
    assert len(Store(str(adv["home"])).registered()) == 3
    assert "3 file(s), 3 video(s)" in r.stderr


def test_a_changed_camera_hint_reruns_the_calibration(adv):
    assert "camera hints changed for 3 registered video(s)" in adv["second"].stderr
    store = Store(str(adv["home"]))
    for pk in store.registered():
        assert store.video_record(pk)["hints"] == {"hfov_deg": 110.0}
        row = store.read_table("calibrations", pk).to_pylist()[0]
        assert abs(row["hfov_deg"] - 110.0) < 0.5 and row["method"].startswith("hint")
        ok = [r for r in store.lineage("calibrations", pk) if r["status"] == "ok"]
        assert '"hfov_deg": 110.0' in ok[-1]["params"]
        # what depends on the calibration was recomputed from the new one
        hands = [r for r in store.lineage("hand_tracks", pk) if r["status"] in ("ok", "blocked")]
        assert ok[-1]["data_version"] in hands[-1]["upstream"]


def _read_only(home: Path, argv: list[str], cwd: Path):
    """Run the CLI with ``home`` read-only: a read-only bind mount in a private mount namespace as
    root, file modes otherwise."""
    cmd = [str(BIN / "ego-assets"), *argv]
    if os.geteuid() == 0:
        if not shutil.which("unshare"):
            pytest.skip("as root a read-only home needs `unshare -m` (util-linux), which is missing")
        script = 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" && exec "$@"'
        r = subprocess.run(["unshare", "-m", "sh", "-c", script, str(home), *cmd], cwd=cwd, env=_env(),
                           capture_output=True, text=True, timeout=600)
        if "mount:" in r.stderr and "ego-assets" not in r.stderr:
            pytest.skip(f"cannot make a read-only mount here: {r.stderr.strip()[:200]}")
        return r
    modes = {p: p.stat().st_mode for p in [home, *home.rglob("*")]}
    try:
        for p in modes:
            p.chmod(modes[p] & ~0o222)
        return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
    finally:
        for p, m in modes.items():
            p.chmod(m)


def test_a_read_only_home_is_one_line_not_a_traceback(adv):
    home = adv["home"]
    r = _read_only(home, ["run", ".", "--source", "adv", "--home", str(home)], adv["src"])
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert f"error: {home}: the storage home is not writable" in r.stderr
    r = _read_only(home, ["check", "--home", str(home)], adv["src"])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "check results not recorded in the quality table" in r.stderr
    assert "check result(s) on 3 video(s)" in r.stdout


def test_check_fails_when_the_dataset_should_exist_and_does_not(tmp_path):
    """`check` passed (exit 0) on a home whose dataset step had failed and left no dataset."""
    home = tmp_path / "h"
    store = Store(str(home))
    v = tmp_path / "v.mp4"
    synth.make_video(v, n_frames=10)
    from ego_assets.lib.sources import Source, discover_file

    d = discover_file(Source(name="ds", uri=str(tmp_path)), str(v))
    store.register_video(d.partition_key, d.record())
    # what the dataset step records when it fails (here: the disk filled up while it wrote)
    store.write_lineage(dict(partition_key="dataset", asset="lerobot_dataset", run_id="r1", code_version="2",
                             data_version=None, upstream=None, params=None, status="failed",
                             error="OSError: [Errno 28] No space left on device: '/data/ds/videos/x.mp4'"))
    from ego_assets.defs.checks import dataset_outcomes

    [o] = dataset_outcomes(store)
    assert (o.check_name, o.passed, o.severity) == ("dataset_exists", False, "ERROR")
    assert "No space left on device: '/data/ds/videos/x.mp4'" in o.detail
    rows = pq.read_table(next((home / "quality" / "lerobot_dataset").rglob("dataset_exists.parquet")))
    assert rows.column("passed").to_pylist() == [False]
    # a dataset step that succeeded earlier, whose folder is gone, is the same ERROR
    store.write_lineage(dict(partition_key="dataset", asset="lerobot_dataset", run_id="r2", code_version="2",
                             data_version="x", upstream=None, params=None, status="ok", error=None))
    [o] = dataset_outcomes(store)
    assert not o.passed and "no meta/info.json" in o.detail
    assert cli.main(["check", "--home", str(home)]) == 1


def test_an_unexpected_error_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch):
    from ego_assets.defs import checks

    def full(store, source=None, quality=None):
        raise RuntimeError("database write failed") from OSError(28, "No space left on device",
                                                                 str(tmp_path / "h" / "quality" / "x"))

    monkeypatch.setattr(checks, "evaluate_all", full)
    assert cli.main(["check", "--home", str(tmp_path / "h")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path / 'h' / 'quality' / 'x'}: No space left on device "
                   "(EGO_ASSETS_DEBUG=1 shows the traceback)"]


def test_catalog_and_check_output_keep_one_row_per_line(adv):
    r = _ego("catalog", "select name from videos order by name", "--home", str(adv["home"]), cwd=adv["src"])
    lines = r.stdout.splitlines()
    assert r.returncode == 0 and lines[-1] == "(3 rows)" and len(lines) == 2 + 3 + 1, r.stdout
    assert "vp8\\nclip.webm" in r.stdout
    r = _ego("check", "--home", str(adv["home"]), cwd=adv["src"])
    assert all(ln.startswith(("ERROR", "WARN")) or "check result(s)" in ln for ln in r.stdout.splitlines())
