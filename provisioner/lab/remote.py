"""SSH to lab hosts with the lab key, checking host keys against known_hosts.

The lab builder uses this once hosts are running; from then on it changes a
host only through SSH, as the toolkit does in production.
"""

import shlex
import socket
import time

import paramiko

from provisioner.errors import HostError, LabError
from provisioner.lab import guard, topology


def connect(host: topology.LabHost, timeout: float = 10.0) -> paramiko.SSHClient:
    guard.require_lab_route(host.address)
    client = paramiko.SSHClient()
    client.load_host_keys(str(topology.KNOWN_HOSTS))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        str(host.address),
        username=topology.LAB_USER,
        key_filename=str(topology.SSH_KEY),
        timeout=timeout,
        allow_agent=False,
        look_for_keys=False,
    )
    return client


def wait_for_ssh(host: topology.LabHost, timeout: float = 30.0) -> None:
    guard.require_lab_route(host.address)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((str(host.address), 22), timeout=1.0) as sock:
                if sock.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise LabError(f"{host.name}: sshd did not answer on {host.address}:22 within {timeout:.0f}s")
        time.sleep(0.1)


def run_script(host: topology.LabHost, script: str, env: dict[str, str], sudo: bool = True) -> str:
    """Run a shell script on the host, fed on stdin with its variables.

    Variables go in the script text, not in argv or the SSH environment, so a
    secret among them never shows in a process list or sshd's log.
    """
    preamble = "".join(f"{k}={shlex.quote(v)}\nexport {k}\n" for k, v in env.items())
    command = "sudo -n /bin/sh -s" if sudo else "/bin/sh -s"
    client = connect(host)
    try:
        stdin, stdout, stderr = client.exec_command(command)
        stdin.write(preamble + script)
        stdin.channel.shutdown_write()
        out = stdout.read().decode(errors="replace")
        err = stderr.read().decode(errors="replace")
        status = stdout.channel.recv_exit_status()
    finally:
        client.close()
    if status != 0:
        last = (err or out).strip().splitlines()
        raise HostError(f"{host.name}: script failed ({status}): {last[-1] if last else 'no output'}")
    return out
