"""SSH to inventory hosts for read-only probes and outside checks.

Changes go through Ansible; this is for reading live state in bulk (one
session per host) and for logging in as a site's users would. Host keys are
checked against the inventory's known_hosts; unknown hosts are refused.
"""

import paramiko

from provisioner.errors import HostError
from provisioner.inventory import Host
from provisioner.lab import guard


def check_route(address: str) -> None:
    """Lab addresses are only contacted while the lab bridge carries them."""
    if guard.is_lab_address(address):
        guard.require_lab_route(address)


def connect(host: Host, timeout: float = 10.0) -> paramiko.SSHClient:
    check_route(host.address)
    client = paramiko.SSHClient()
    if host.known_hosts:
        client.load_host_keys(host.known_hosts)
    else:
        client.load_system_host_keys()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(host.address, username=host.ssh_user, key_filename=host.ssh_key, timeout=timeout,
                       allow_agent=False, look_for_keys=host.ssh_key is None)
    except (OSError, paramiko.SSHException) as err:
        raise HostError(f"{host.name}: cannot connect over SSH to {host.address}: {err}") from None
    return client


def run(host: Host, command: str, stdin: str = "", sudo: bool = False, timeout: float = 120.0) -> tuple[int, str, str]:
    """Run one command; its input (which may hold a secret) goes on stdin, never argv."""
    client = connect(host)
    try:
        chan_in, out, err = client.exec_command(("sudo -n " if sudo else "") + command, timeout=timeout)
        chan_in.write(stdin)
        chan_in.channel.shutdown_write()
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
        return out.channel.recv_exit_status(), stdout, stderr
    finally:
        client.close()
