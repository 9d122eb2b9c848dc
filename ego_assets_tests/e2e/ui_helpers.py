"""Helpers for the browser test of the Dagster UI: a `dagster dev` server on a throwaway home, ended by
its process group, and a Playwright page on Debian's Chromium (never a downloaded browser)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from ego_assets_tests.helpers.synth import write_frames

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "ui"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1600, "height": 1000}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """Runs in the child before exec: if pytest is killed outright, `dagster dev` gets SIGTERM (and its
    own children leave with it: they watch its shutdown pipe)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class DagsterDev:
    """`make ui`'s launcher (python -m ego_assets.ui: dagster dev with workspace.yaml, EGO_ASSETS_HOME=<home>,
    DAGSTER_HOME=<home>/dagster holding the project's dagster.yaml), in its own process group."""

    home: Path
    port: int
    log_path: Path
    env: dict[str, str] | None = None  # the environment it starts from (default: this process's)
    proc: subprocess.Popen | None = None
    stop_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = dict(os.environ if self.env is None else self.env, DAGSTER_DISABLE_TELEMETRY="1", PYTHONUNBUFFERED="1")
        for var in ("EGO_ASSETS_SOURCES", "DAGSTER_HOME", "EGO_ASSETS_HOME"):
            env.pop(var, None)  # the defaults: <home>/sources.yaml, <home>/dagster
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")  # a file, not a pipe: nobody reads a pipe while the test runs
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ego_assets.ui", "--port", str(self.port), "--home", str(self.home)],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_die_with_parent)
        log.close()

    def wait_ready(self, timeout_s: float) -> float:
        """Seconds until the webserver answers; raises with the log's tail if it died or timed out."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"make ui exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(self.url + "/server_info", timeout=5) as r:
                    if r.status == 200:
                        return time.monotonic() - t0
            time.sleep(1.0)
        raise TimeoutError(f"dagster dev did not answer on {self.url} within {timeout_s:.0f} s:\n"
                           f"{self.log_tail()}")

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGTERM to the launcher, as `kill` would: it stops every process of the UI by itself. Its time
        is kept in ``stop_seconds``; whatever is left after ``grace_s`` is killed (and reported by
        :meth:`group_alive`)."""
        if self.proc is None:
            return
        t0 = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=grace_s)
        while self.group_alive() and time.monotonic() - t0 < grace_s:
            time.sleep(0.2)
        self.stop_seconds = time.monotonic() - t0
        left = self.group_alive()
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired, ProcessLookupError):
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=5)

    def group_alive(self) -> list[int]:
        """Pids of the UI still alive: every process with this home in its environment (the launcher,
        dagster dev and its process group, code servers, run workers)."""
        marker = f"EGO_ASSETS_HOME={self.home}".encode()
        out = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit() and int(d.name) != os.getpid():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    if marker not in (d / "environ").read_bytes().split(b"\0"):
                        continue
                    fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
                    if fields[0] not in "ZX":
                        out.append(int(d.name))
        return out

    @staticmethod
    def describe(pids: list[int]) -> str:
        out = []
        for pid in pids:
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:160]
            except OSError:
                cmd = "(gone)"
            out.append(f"{pid}: {cmd}")
        return "; ".join(out)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


def dismiss_welcome(page) -> None:
    """The first visit to a fresh instance shows a "Join the Dagster community" modal: skip it whenever
    it shows up (Playwright runs the handler before any action it would block)."""
    dialog = page.get_by_role("dialog").filter(has=page.get_by_role("button", name="Skip", exact=True))
    page.add_locator_handler(dialog, lambda d: d.get_by_role("button", name="Skip", exact=True).click())


def poll(page, check: Callable[[], bool], timeout_s: float, what: str,
         refresh: Callable[[], None] | None = None) -> float:
    """Call ``check`` until it is true, refreshing the view between tries; seconds it took. ``check``
    should wait a little for the page to render (see :func:`seen`); an exception counts as false."""
    t0 = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - t0
        except Exception:  # noqa: BLE001 - the page may be re-rendering; try again
            pass
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for: {what}")
        if refresh:
            with contextlib.suppress(Exception):
                refresh()
        else:
            page.wait_for_timeout(2000)


def seen(locator, timeout_ms: float = 8000) -> bool:
    """Whether a visible element of ``locator`` shows up within ``timeout_ms`` (a fresh page takes a
    few seconds to render on a loaded machine; a plain is_visible() would not wait)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        locator.filter(visible=True).first.wait_for(state="visible", timeout=timeout_ms)
        return True
    except PlaywrightTimeout:
        return False


def asset_link_name(key: str) -> re.Pattern:
    """Accessible name of an asset's link in the catalog (the key, shown twice for truncation)."""
    return re.compile(rf"^(?:{re.escape(key)}\s*)+$")


def shot(page, name: str, **kw) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    p = ARTIFACTS / name
    page.screenshot(path=str(p), **kw)
    return p


@contextlib.contextmanager
def chromium_page() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            ctx = browser.new_context(viewport=VIEWPORT)
            ctx.set_default_timeout(60_000)  # a loaded 2-core machine renders slowly
            yield ctx.new_page()
        finally:
            browser.close()


def cut_clip(src: str | Path, dst: str | Path, start_s: float, dur_s: float, width: int = 320) -> None:
    """``dur_s`` seconds of ``src`` from ``start_s``, re-encoded small (H.264, ``width`` px wide): three
    cuts of the bundled real clip are three short videos with real hands (their own partitions)."""
    from fractions import Fraction

    import av

    with av.open(str(src)) as inp:
        vin = inp.streams.video[0]
        rate = vin.average_rate
        h = int(round(vin.height * width / vin.width / 2)) * 2

        def frames():
            for f in inp.decode(vin):
                t = float(f.pts * vin.time_base)
                if t < start_s:
                    continue
                if t >= start_s + dur_s:
                    break
                yield f

        write_frames(dst, frames(), fps=rate, size=(width, h), fmt=None, time_base=Fraction(1) / rate,
                     codec_options={"preset": "ultrafast", "crf": "26"})
