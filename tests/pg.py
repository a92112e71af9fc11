"""A throwaway, real PostgreSQL server on loopback for tests.

``PostgresServer`` runs ``initdb`` into a fresh temporary directory, starts ``postgres`` on a free
TCP port of 127.0.0.1 (unix socket inside the same directory, fsync off), creates one database and
exposes a SQLAlchemy URL for it.  ``stop()`` shuts the server down and removes the directory.

PostgreSQL refuses to run as root, so when the tests run as root (as CI does) every server
command goes through ``runuser -u postgres --`` and the directory is handed to that user.

The binaries are looked up in ``$PG_BINDIR``, then the newest ``/usr/lib/postgresql/*/bin``
(Debian/Ubuntu layout), then ``pg_config --bindir`` and ``PATH``.  ``.ci/run`` installs the
``postgresql`` package when none is found.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SERVER_USER = "postgres"  # the OS account the server runs as when we are root
DB_USER = "postgres"  # the database superuser created by initdb
INSTALL_HINT = "PostgreSQL not found: install postgresql (see .ci/run) or set PG_BINDIR"


class PostgresNotFoundError(RuntimeError):
    """No usable PostgreSQL server binaries (initdb, pg_ctl, postgres) on this machine."""


def _version_key(path: str) -> tuple[int, ...]:
    # /usr/lib/postgresql/15/bin -> (15,); 9.6 -> (9, 6)
    m = re.search(r"postgresql/([0-9.]+)/bin", path)
    return tuple(int(p) for p in m.group(1).split(".") if p) if m else ()


def _has_server(bindir: str | os.PathLike[str]) -> bool:
    return all(os.access(Path(bindir) / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres"))


def find_bindir() -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``; raises PostgresNotFoundError."""
    candidates: list[str] = []
    if os.environ.get("PG_BINDIR"):
        candidates.append(os.environ["PG_BINDIR"])
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True)
            candidates.append(out.stdout.strip())
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).resolve().parent))
    for cand in candidates:
        if cand and _has_server(cand):
            return Path(cand)
    raise PostgresNotFoundError(f"{INSTALL_HINT} (looked in: {', '.join(candidates) or 'nothing found'})")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class PostgresServer:
    """A real PostgreSQL server for one test session; use as a context manager or start()/stop().

    Attributes once started: ``host`` (127.0.0.1), ``port``, ``dbname``, ``user`` and ``url``,
    a SQLAlchemy/Optuna URL ``postgresql+psycopg2://postgres@127.0.0.1:PORT/DBNAME`` (trust auth,
    no password).
    """

    def __init__(self, dbname: str = "crmlab", *, start_timeout: float = 30.0) -> None:
        self.dbname = dbname
        self.user = DB_USER
        self.host = "127.0.0.1"
        self.port: int | None = None
        self.start_timeout = start_timeout
        self.bindir = find_bindir()
        self.as_root = os.geteuid() == 0
        self.base: Path | None = None
        if self.as_root:  # PostgreSQL refuses to run as root: run it as SERVER_USER
            import pwd

            runuser = shutil.which("runuser")
            if runuser is None:
                raise PostgresNotFoundError("running as root but `runuser` (util-linux) is missing")
            try:
                pw = pwd.getpwnam(SERVER_USER)
            except KeyError:
                raise PostgresNotFoundError(
                    f"running as root but there is no `{SERVER_USER}` OS user to run the server as "
                    "(the postgresql package creates it)"
                ) from None
            self._runuser, self._uid, self._gid = runuser, pw.pw_uid, pw.pw_gid

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
    def _cmd(self, tool: str, *args: str) -> list[str]:
        cmd = [str(self.bindir / tool), *args]
        if self.as_root:
            cmd = [self._runuser, "-u", SERVER_USER, "--", *cmd]
        return cmd

    def _run(self, tool: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self._cmd(tool, *args),
            cwd=self.base,  # the server user may not be able to enter the caller's cwd
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "LC_ALL": "C", "LANG": "C"},
        )
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
            probe = subprocess.run([self._runuser, "-u", SERVER_USER, "--", "test", "-w", str(base)])
            if probe.returncode == 0:
                return base
            shutil.rmtree(base, ignore_errors=True)
        raise RuntimeError(f"the `{SERVER_USER}` user cannot write to a temporary directory (TMPDIR, /tmp)")

    # ---- lifecycle --------------------------------------------------------------------------
    def start(self) -> PostgresServer:
        self.base = self._make_base()
        try:
            self._run(
                "initdb",
                "-D", str(self.datadir),
                "-U", self.user,
                "-A", "trust",
                "-E", "UTF8",
                "--locale=C",
                "--no-sync",
            )  # fmt: skip
            last_error: Exception | None = None
            for _ in range(3):  # the free port can be taken between probing and binding
                self.port = free_port(self.host)
                self._write_conf()
                try:
                    self._run(
                        "pg_ctl",
                        "-D", str(self.datadir),
                        "-l", str(self.base / "postgres.log"),
                        "-w", "-t", str(int(self.start_timeout)),
                        "start",
                        timeout=self.start_timeout + 15,
                    )  # fmt: skip
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
