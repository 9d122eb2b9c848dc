"""Helpers for the browser test of the Dagster UI: a `dagster dev` server on a throwaway home, ended by
its process group, and a Playwright page on Debian's Chromium (never a downloaded browser)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

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
    """`dagster dev -w workspace.yaml` with EGO_ASSETS_HOME=<home>, DAGSTER_HOME=<home>/dagster holding a
    copy of the project's dagster.yaml (as `make ui` does), in its own process group."""

    home: Path
    port: int
    log_path: Path
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        dh = self.home / "dagster"
        dh.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / "dagster.yaml", dh / "dagster.yaml")
        env = dict(os.environ, EGO_ASSETS_HOME=str(self.home), DAGSTER_HOME=str(dh),
                   DAGSTER_DISABLE_TELEMETRY="1", PYTHONUNBUFFERED="1")
        env.pop("EGO_ASSETS_SOURCES", None)  # the default: <home>/sources.yaml
        dagster = Path(sys.executable).parent / "dagster"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")  # a file, not a pipe: nobody reads a pipe while the test runs
        self.proc = subprocess.Popen(
            [str(dagster), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(self.port)],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_die_with_parent)
        log.close()

    def wait_ready(self, timeout_s: float) -> float:
        """Seconds until the webserver answers; raises with the log's tail if it died or timed out."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dagster dev exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(self.url + "/server_info", timeout=5) as r:
                    if r.status == 200:
                        return time.monotonic() - t0
            time.sleep(1.0)
        raise TimeoutError(f"dagster dev did not answer on {self.url} within {timeout_s:.0f} s:\n"
                           f"{self.log_tail()}")

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM to the whole process group (webserver, daemon, code servers, run workers), then
        SIGKILL to whatever is left of it: `dagster dev` can hang on SIGTERM on a loaded machine."""
        if self.proc is None:
            return
        pgid = self.proc.pid  # start_new_session: the group id is the leader's pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=grace_s)
        # SIGKILL until the group is empty: on a loaded machine a member can take a moment to die,
        # and a run worker may have been forking a step process when the first signal arrived.
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=1)
            if not self.group_alive() or time.monotonic() > deadline:
                break

    def group_alive(self) -> list[int]:
        """Pids still in the server's process group (for the teardown check)."""
        if self.proc is None:
            return []
        out = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    stat = (d / "stat").read_text()
                    fields = stat.rsplit(")", 1)[1].split()
                    if int(fields[2]) == self.proc.pid and fields[0] not in "ZX":
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
