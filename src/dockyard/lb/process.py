"""One HAProxy process per load balancer: start, seamless reload, stop, and its admin socket.

Files live in the load balancer's own directory::

    haproxy.cfg      the rendered configuration
    admin.sock       the runtime API (level admin, expose-fd listeners); when that path would be too
                     long for a unix socket (HAProxy takes 97 bytes), ``/tmp/dockyard-lb/<dir name>.sock``
    servers.state    ``show servers state`` dumped just before a reload, loaded by the new process
    haproxy.pid      the pid of the process serving now (tests and operators use it)
    haproxy.log      what HAProxy prints (alerts, warnings)

A reload starts ``haproxy -f cfg -x admin.sock -sf <old pid>``: the new process takes the listening
sockets over from the old one (no refused connection), loads the server states the old one had, and
tells the old one to finish its in-flight requests and leave. The old process is reaped in the
background. Every process gets PR_SET_PDEATHSIG, so none outlives a server that was killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import tempfile
from pathlib import Path

log = logging.getLogger("dockyard.lb")

_PR_SET_PDEATHSIG = 1


class HaproxyError(Exception):
    """HAProxy refused a configuration, failed to start or did not answer."""


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class AdminSocket:
    """HAProxy's runtime API over its unix socket: one command line per connection."""

    def __init__(self, path: Path, timeout: float = 5.0) -> None:
        self.path = path
        self.timeout = timeout

    async def send(self, line: str) -> str:
        async def exchange() -> str:
            reader, writer = await asyncio.open_unix_connection(str(self.path))
            try:
                writer.write(line.encode() + b"\n")
                await writer.drain()
                return (await reader.read()).decode(errors="replace")
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

        return await asyncio.wait_for(exchange(), self.timeout)


MAX_SOCKET_PATH = 97  # what HAProxy accepts for a unix socket's path


def socket_path(directory: Path) -> Path:
    beside = directory.absolute() / "admin.sock"
    if len(str(beside).encode()) <= MAX_SOCKET_PATH:
        return beside
    return Path(tempfile.gettempdir()) / "dockyard-lb" / f"{directory.name}.sock"


class HaproxyProcess:
    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.config = directory / "haproxy.cfg"
        self.state_file = directory / "servers.state"
        self.pid_file = directory / "haproxy.pid"
        self.log_file = directory / "haproxy.log"
        self.admin = AdminSocket(socket_path(directory))
        self.proc: asyncio.subprocess.Process | None = None
        self._retiring: set[asyncio.subprocess.Process] = set()

    @property
    def socket_path(self) -> Path:
        return self.admin.path

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def start(self, config: str) -> None:
        """Start from nothing (first start, or after the process died): no state carried over."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        for stale in (self.state_file, self.socket_path):
            stale.unlink(missing_ok=True)
        self.config.write_text(config)
        self.proc = await self._spawn([])

    async def reload(self, config: str, servers_state: str) -> None:
        """Seamless reload: the new process starts on the old one's sockets with its server states.

        ``servers_state`` is ``show servers state`` of the running process, read just before.
        """
        old = self.proc
        if old is None or old.returncode is not None:
            await self.start(config)
            return
        self.state_file.write_text(servers_state)
        previous = self.config.read_text()
        self.config.write_text(config)
        try:
            new = await self._spawn(["-x", str(self.socket_path), "-sf", str(old.pid)])
        except HaproxyError:
            self.config.write_text(previous)  # the old process keeps serving the old configuration
            raise
        self.proc = new
        self._retire(old)

    async def _spawn(self, extra: list[str]) -> asyncio.subprocess.Process:
        with open(self.log_file, "ab") as out:
            proc = await asyncio.create_subprocess_exec(
                self.binary,
                "-f",
                str(self.config),
                *extra,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        try:
            await self._wait_ready(proc)
        except BaseException:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        self.pid_file.write_text(f"{proc.pid}\n")
        return proc

    async def _wait_ready(self, proc: asyncio.subprocess.Process, timeout: float = 10.0) -> None:
        """Until the admin socket answers with the new process's pid."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if proc.returncode is not None:
                raise HaproxyError(f"haproxy exited with {proc.returncode}: {self.log_tail()}")
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                info = await self.admin.send("show info")
                if f"\nPid: {proc.pid}\n" in "\n" + info:
                    return
            await asyncio.sleep(0.02)
        raise HaproxyError(f"haproxy did not answer on {self.socket_path}: {self.log_tail()}")

    def _retire(self, proc: asyncio.subprocess.Process) -> None:
        self._retiring.add(proc)

        async def reap() -> None:
            await proc.wait()
            self._retiring.discard(proc)

        asyncio.get_running_loop().create_task(reap())

    async def stop(self) -> None:
        procs = [p for p in [self.proc, *self._retiring] if p is not None]
        self.proc = None
        for p in procs:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.terminate()
        for p in procs:
            try:
                await asyncio.wait_for(p.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                await p.wait()
        self.pid_file.unlink(missing_ok=True)
        self.socket_path.unlink(missing_ok=True)

    def log_tail(self, limit: int = 1500) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return text[-limit:].strip()


def remove_directory(directory: Path) -> None:
    for name in ("haproxy.cfg", "servers.state", "haproxy.pid", "haproxy.log", "admin.sock"):
        with contextlib.suppress(OSError):
            (directory / name).unlink()
    with contextlib.suppress(OSError):
        socket_path(directory).unlink()
    with contextlib.suppress(OSError):
        os.rmdir(directory)
