"""Streams between a host (over SSH, as root through sudo) and restic on the controller.

Nothing full-size lands on the controller's disk: a site's tar or dump flows
from the SSH channel into `restic backup --stdin`, and a restore flows from
`restic dump` into the channel. A stream whose remote command fails is never
committed: restic is stopped before it sees the end of its input, so a
half-read dump never becomes a snapshot.
"""

import signal
import socket
import subprocess
import threading
import time

from provisioner import ssh
from provisioner.backup.repository import CHUNK, Repository, ResticError, _tail, summary
from provisioner.errors import HostError


def _open(host, command: str, timeout: float):
    client = ssh.connect(host)
    channel = client.get_transport().open_session()
    channel.settimeout(timeout)
    channel.exec_command("sudo -n " + command)
    return client, channel


def host_to_restic(host, command: str, repo: Repository, restic_args: list[str], timeout: float,
                   what: str = "the command") -> dict:
    """Run `command` on the host and keep its output as one snapshot; restic's summary."""
    client, channel = _open(host, command, timeout)
    proc = repo.popen(*restic_args, stdin=subprocess.PIPE)
    restic_err = _drain(proc.stderr)
    deadline = time.monotonic() + timeout
    try:
        try:
            while True:
                data = channel.recv(CHUNK)
                if not data:
                    break
                proc.stdin.write(data)
                if time.monotonic() > deadline:
                    raise HostError(f"{host.name}: the stream took more than {timeout} s (backup.timeout)")
        except (BrokenPipeError, socket.timeout, OSError) as err:
            stop(proc)
            raise HostError(f"{host.name}: the stream into restic stopped: {err}; "
                            f"restic: {_tail(b''.join(restic_err).decode(errors='replace'))}") from None
        rc = channel.recv_exit_status()
        remote_err = _read_stderr(channel)
        if rc != 0:
            # Killed before its input ends, restic saves no snapshot of the partial stream.
            stop(proc)
            raise HostError(f"{host.name}: {what} exited {rc}: "
                            f"{_tail(remote_err, 300)}")
        proc.stdin.close()
        out = proc.stdout.read().decode(errors="replace")
        if proc.wait() != 0:
            raise ResticError(f"{repo.url}: restic backup exited {proc.returncode}: "
                              f"{_tail(b''.join(restic_err).decode(errors='replace'))}")
        return summary(out, repo.url)
    finally:
        stop(proc)
        client.close()


def restic_to_host(repo: Repository, restic_args: list[str], host, command: str, timeout: float) -> str:
    """Feed `restic dump` into `command` on the host; the command's output (its exit must be 0)."""
    client, channel = _open(host, command, timeout)
    proc = repo.popen(*restic_args)
    restic_err = _drain(proc.stderr)
    out = _drain_channel(channel)
    try:
        try:
            while True:
                data = proc.stdout.read(CHUNK)
                if not data:
                    break
                channel.sendall(data)
        except (OSError, socket.timeout) as err:
            raise HostError(f"{host.name}: the restore stream stopped: {err}; "
                            f"{_tail(_read_stderr(channel), 300)}") from None
        channel.shutdown_write()
        if proc.wait() != 0:
            raise ResticError(f"{repo.url}: restic {restic_args[0]} exited {proc.returncode}: "
                              f"{_tail(b''.join(restic_err).decode(errors='replace'))}")
        rc = channel.recv_exit_status()
        text = b"".join(out.wait()).decode(errors="replace")
        if rc != 0:
            raise HostError(f"{host.name}: the restore on the host exited {rc}: "
                            f"{_tail(_read_stderr(channel) or text, 400)}")
        return text
    finally:
        stop(proc)
        client.close()


def restic_to_file(repo: Repository, restic_args: list[str], out) -> None:
    """`restic dump` into an open file of the controller (a scratch check)."""
    proc = repo.popen(*restic_args, stdout=out)
    err = proc.stderr.read()
    if proc.wait() != 0:
        raise ResticError(f"{repo.url}: restic {restic_args[0]} exited {proc.returncode}: "
                          f"{_tail(err.decode(errors='replace'))}")


class _Collected(list):
    def __init__(self, thread=None):
        super().__init__()
        self.thread = thread

    def wait(self):
        if self.thread:
            self.thread.join()
        return self


def _drain(pipe) -> _Collected:
    """Read a pipe in the background, so a chatty stderr never blocks the stream."""
    got = _Collected()

    def read():
        for chunk in iter(lambda: pipe.read(65536), b""):
            got.append(chunk)

    got.thread = threading.Thread(target=read, daemon=True)
    got.thread.start()
    return got


def _drain_channel(channel) -> _Collected:
    got = _Collected()

    def read():
        while True:
            data = channel.recv(65536)
            if not data:
                break
            got.append(data)

    got.thread = threading.Thread(target=read, daemon=True)
    got.thread.start()
    return got


def _read_stderr(channel) -> str:
    """What the remote command wrote to stderr so far (all of it once it has exited); never blocks."""
    chunks = []
    while channel.recv_stderr_ready():
        chunks.append(channel.recv_stderr(65536))
    return b"".join(chunks).decode(errors="replace")


def stop(proc: subprocess.Popen) -> None:
    """Stop restic without a snapshot: SIGINT lets it remove its repository lock first."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
