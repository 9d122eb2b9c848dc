"""`make ui`: Dagster's UI and daemon (`dagster dev`) on 127.0.0.1:PORT for the project's workspace and
instance, started so that it fails clearly and stops promptly.

- The port is checked first: when it is taken, one line says so and the exit status is 1 (dagster dev
  would log "Serving ... on :PORT", fail to bind and leave its daemon running).
- dagster dev runs in its own process group with DAGSTER_HOME (holding the project's dagster.yaml) as
  its working folder, so it does not warn that a dagster.yaml "will not be used"; relative paths in
  EGO_ASSETS_* settings are made absolute first and the starting folder stays on PYTHONPATH.
- Ctrl-C or SIGTERM: the whole group (webserver, daemon, code server, run workers) gets SIGINT, and
  whatever still runs after a grace period is killed; it is over within seconds. A run cut short this
  way is marked failed by run monitoring when the UI next starts.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ego_assets.lib import settings

ROOT = Path(__file__).resolve().parents[1]
GRACE_S = 8.0


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def default_home() -> str:
    """EGO_ASSETS_HOME (``lib/settings``); unset, the project's own ``.ego_assets`` rather than the
    settings' cwd-relative default, so `make ui` finds the same store from any directory."""
    home = settings.get("HOME")
    return str(ROOT / ".ego_assets") if home == settings.SETTINGS["HOME"].default else home


def prepare_home(home: str) -> Path:
    """<home>/dagster with the project's dagster.yaml for this machine (the instance `make ui` and the CLI
    share; its run queue runs one video per core, as the CLI: ``execute.instance_yaml``)."""
    from ego_assets.defs.execute import install_instance_yaml

    dh = Path(os.environ.get("DAGSTER_HOME") or Path(home) / "dagster").resolve()
    install_instance_yaml(dh)
    return dh


def absolute_paths(environ) -> dict[str, str]:
    """EGO_ASSETS_* settings that name an existing file or folder relative to where `make ui` was
    started, made absolute (the code server's working folder is DAGSTER_HOME)."""
    return {k: os.path.abspath(v) for k, v in environ.items()
            if k.startswith(settings.PREFIX) and v and "://" not in v and not os.path.isabs(v)
            and os.path.exists(v)}


def stop_group(proc: subprocess.Popen, grace_s: float = GRACE_S) -> int:
    """SIGINT to the process group (dagster dev shuts its services down on it), then SIGKILL."""
    try:
        os.killpg(proc.pid, signal.SIGINT)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # children dagster dev left behind, or dagster dev itself
    except ProcessLookupError:
        pass
    return proc.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ego_assets.ui", description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 3000))
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--home", default=default_home())
    args = ap.parse_args(argv)
    if not port_free(args.host, args.port):
        print(f"make ui: port {args.port} on {args.host} is already in use (another `make ui`?); "
              f"pick another one: make ui PORT={args.port + 1}", file=sys.stderr)
        return 1
    home = str(Path(args.home).resolve()) if "://" not in args.home else args.home
    dh = prepare_home(home)
    env = {**os.environ, **absolute_paths(os.environ), settings.var("HOME"): home, "DAGSTER_HOME": str(dh)}
    # the code runs from DAGSTER_HOME: modules beside the project (EGO_ASSETS_PLUGINS) stay importable
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH")) if p)
    cmd = [str(Path(sys.executable).parent / "dagster"), "dev", "-w", str(ROOT / "workspace.yaml"),
           "-h", args.host, "-p", str(args.port)]
    print(f"Dagster UI: http://{args.host}:{args.port}  (home {home}; Ctrl-C stops it)", flush=True)
    proc = subprocess.Popen(cmd, env=env, cwd=dh, start_new_session=True)
    stopping = {"signal": None}

    def on_signal(signum, _frame):
        stopping["signal"] = signum

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while proc.poll() is None and stopping["signal"] is None:
        time.sleep(0.2)
    if stopping["signal"] is not None:
        stop_group(proc)
        return 0
    rc = proc.returncode
    stop_group(proc, grace_s=2.0)  # dagster dev ended by itself: take its children with it
    return rc or 0


if __name__ == "__main__":
    sys.exit(main())
