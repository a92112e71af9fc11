"""A real ``mlflow server`` on loopback for tests: SQLite backend store, proxied artifacts, a free port.

``MlflowServer(folder).start()`` runs the ``mlflow`` executable next to the test interpreter in its own process group
and waits for ``/health``; ``stop()`` terminates the group (the server's workers too). The store's files (``srv.db``,
``artifacts/``) and the server's log stay in ``folder``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.pg import free_port

__all__ = ["BIN", "MlflowServer", "clean_env"]

BIN = Path(sys.executable).parent
"""The test interpreter's bin folder (``mlflow``, ``crmlab``)."""


def clean_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The test's environment without a tracking URI of its own; token cache in ``tmp``; CPU only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(CRMLAB_CACHE=str(tmp / "token-cache"), CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2", **extra)
    env.pop("KERAS_BACKEND", None)
    return env


class MlflowServer:
    """One ``mlflow server`` process for a test session or module.

    Args:
        folder: where its store (``srv.db``), artifacts (``artifacts/``) and log (``server.log``) go.
        start_timeout: seconds to wait for ``/health``.
    """

    def __init__(self, folder: Path, start_timeout: float = 60.0) -> None:
        self.folder = folder
        self.start_timeout = start_timeout
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.folder / "server.log"

    def start(self) -> MlflowServer:
        """Start the server and wait until it answers; raises RuntimeError (with the log's tail) if it does not."""
        exe = BIN / "mlflow"
        if not exe.exists():
            raise RuntimeError(f"no mlflow executable next to {sys.executable}")
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        command = [str(exe), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        command += ["--backend-store-uri", f"sqlite:///{self.folder / 'srv.db'}"]
        command += ["--artifacts-destination", str(self.folder / "artifacts")]
        with open(self.log, "wb") as out:
            self._proc = subprocess.Popen(
                command,
                cwd=self.folder,
                env=clean_env(self.folder),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.start_timeout
        while not self._healthy():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mlflow server did not start:\n{self.log.read_text()[-4000:]}")
            time.sleep(0.5)
        return self

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def stop(self) -> None:
        """Terminate the server and its workers (its own process group), then kill what is left."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)
        with contextlib.suppress(ProcessLookupError):  # workers that outlived the server, or a server that hangs
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)
