"""A local Kafka-protocol broker for laptops and tests: noida-db's bundled binary, started and stopped by PID.

Production points `KafkaSettings.bootstrap_servers` at any Apache Kafka; nothing else in surge knows which
broker it talks to. This module is only the laptop/test convenience behind `surge broker start|stop` and
the test fixtures.

Why the bundled binary and not the `noida-db` console script: the script is a wrapper process, and
stopping the wrapper leaves the broker running. Stop with SIGTERM: the broker saves its data on the way
out (a SIGKILL right after a produce can lose that produce).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path


class BrokerError(RuntimeError):
    """The local broker could not be started, reached or stopped."""


def noida_binary() -> Path:
    """Path of noida-db's bundled broker binary (from the `noida-db` wheel, extra `local`)."""
    try:
        path = Path(str(files("noida_db").joinpath("noida-db")))
    except ModuleNotFoundError as error:
        raise BrokerError("noida-db is not installed: pip install 'surge[local]'") from error
    if not path.is_file():
        raise BrokerError(f"noida-db binary not found at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_answers(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still "exists"; reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


@dataclass
class LocalBroker:
    """One noida-db broker (Kafka only) on host:port with its data in data_dir."""

    data_dir: Path
    port: int
    host: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "surge-broker.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "surge-broker.log"

    def start(self, timeout_s: float = 20.0, detach: bool = False) -> int:
        """Start the broker, wait until its port answers; returns its PID (also written to pid_file).

        `detach=True` starts it in its own session so it outlives this process (`surge broker start`).
        """
        if port_answers(self.host, self.port):
            raise BrokerError(f"{self.bootstrap_servers} is already in use")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            str(noida_binary()),
            "start",
            "--host",
            self.host,
            "--only",
            "kafka",
            "--kafka-port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
        ]
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=detach,
            )
        self.pid_file.write_text(f"{self.process.pid} {self.host} {self.port}\n")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerError(f"broker exited with code {self.process.returncode}; see {self.log_file}")
            if port_answers(self.host, self.port):
                return self.process.pid
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"broker did not answer on {self.bootstrap_servers} within {timeout_s} s")

    def stop(self, timeout_s: float = 15.0) -> bool:
        """SIGTERM the broker (it saves its data), wait for it; SIGKILL only if it hangs. True if one ran."""
        pid = self.process.pid if self.process else self._pid_from_file()
        if pid is None or not pid_alive(pid):
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None:
                if self.process.poll() is not None:
                    break
            elif not pid_alive(pid):
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
            if self.process is not None:
                self.process.wait(5)
        # The port is released when the process is gone; wait for it so a restart on the same port works.
        while port_answers(self.host, self.port) and time.monotonic() < deadline + 5:
            time.sleep(0.05)
        self.process = None
        self.pid_file.unlink(missing_ok=True)
        return True

    def _pid_from_file(self) -> int | None:
        try:
            return int(self.pid_file.read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    @classmethod
    def from_pid_file(cls, data_dir: Path) -> LocalBroker | None:
        """The broker `surge broker start` left running for this data dir, if any."""
        try:
            pid, host, port = (data_dir / "surge-broker.pid").read_text().split()
            int(pid)
        except (FileNotFoundError, ValueError):
            return None
        return cls(data_dir=data_dir, port=int(port), host=host)
