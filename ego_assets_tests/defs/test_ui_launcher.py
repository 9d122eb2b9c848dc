"""`make ui` (python -m ego_assets.ui) with its port taken: one clear line and exit status 1, nothing
started (dagster dev would say it serves on the port, fail to bind and leave its daemon running)."""

import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_taken_port_is_refused_clearly(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "ego_assets.ui", "--port", str(port),
                            "--home", str(tmp_path / "home")],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in r.stderr
    assert f"make ui PORT={port + 1}" in r.stderr
    assert "Serving" not in r.stdout + r.stderr
    assert not (tmp_path / "home").exists()  # nothing was started or written
    assert time.monotonic() - t0 < 60
