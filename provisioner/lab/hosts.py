"""Lab hosts as processes: an overlay root, namespaces, and an init inside.

Each host is `nsenter --net` into its network namespace, then `unshare` of a
mount, UTS and PID namespace whose first process (boot.sh, then tini) is the
host's init. `--kill-child` ties the namespace's life to the unshare process
we record, so stopping it stops everything the host started.
"""

import os
import signal
import subprocess
import time
from importlib import resources
from pathlib import Path

from provisioner.errors import LabError
from provisioner.lab import topology
from provisioner.lab.system import run

FILES = resources.files("provisioner.lab") / "files"
SCRIPTS = resources.files("provisioner.lab") / "scripts"


def _dir(host: topology.LabHost) -> Path:
    return topology.HOSTS_DIR / host.name


def _pid_file(host: topology.LabHost) -> Path:
    return _dir(host) / "unshare.pid"


def is_mounted(path: Path) -> bool:
    target = str(path)
    with open("/proc/self/mounts") as mounts:
        return any(line.split()[1] == target for line in mounts)


def mount_root(host: topology.LabHost, lower: Path) -> bool:
    """Mount the host's overlay root; return True if it was created fresh."""
    base = _dir(host)
    fresh = not (base / "upper").exists()
    for sub in ("upper", "work", "root"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    if not is_mounted(host.root):
        run(
            "mount", "-t", "overlay", "overlay",
            "-o", f"lowerdir={lower},upperdir={base / 'upper'},workdir={base / 'work'}",
            str(host.root),
        )
    return fresh


def install_boot_files(host: topology.LabHost, hosts_line: str, authorized_key: str) -> str:
    """Write what a host needs to boot and be reached by SSH; return its host key.

    This is building the image (like cloud-init's seed), before the host runs;
    from then on the controller reaches the host only over SSH.
    """
    root = host.root
    (root / "etc/hostname").write_text(host.name + "\n")
    (root / "etc/lab").mkdir(parents=True, exist_ok=True)
    (root / "etc/lab/services").write_text("ssh\n")
    init = root / "usr/local/sbin/lab-init"
    init.write_text((FILES / "lab-init").read_text())
    init.chmod(0o755)
    # Services Debian ships with a systemd unit only (or none) get an init script.
    for service in ("pdns", "pebble"):
        script = root / "etc/init.d" / service
        script.write_text((FILES / f"{service}.init").read_text())
        script.chmod(0o755)

    key = root / "etc/ssh/ssh_host_ed25519_key"
    if not key.exists():
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{host.name}", "-f", str(key))
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "LAB_PHASE": "base",
        "LAB_ROLE": host.role,
        "LAB_HOSTS": hosts_line,
        "LAB_USER": topology.LAB_USER,
        "LAB_AUTHORIZED_KEY": authorized_key,
    }
    run("chroot", str(root), "/bin/sh", "-s", input=(SCRIPTS / "setup-host.sh").read_text(), env=env)
    return (root / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[1]


def pid(host: topology.LabHost) -> int | None:
    """PID of the host's unshare process if it is alive, else None."""
    try:
        value = int(_pid_file(host).read_text())
    except (OSError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{value}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    return value if cmdline and os.path.basename(cmdline[0]) == b"unshare" else None


def init_pid(host: topology.LabHost) -> int | None:
    """Host PID of the namespace's init (the child of unshare)."""
    parent = pid(host)
    if parent is None:
        return None
    try:
        children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def start(host: topology.LabHost) -> int:
    """Boot the host; return the unshare PID. A running host is left alone."""
    running = pid(host)
    if running:
        return running
    console = open(_dir(host) / "console.log", "ab")
    proc = subprocess.Popen(
        [
            "nsenter", f"--net=/run/netns/{host.netns}",
            "unshare", "--mount", "--uts", "--pid", "--fork", "--kill-child",
            "--propagation", "private",
            "/bin/sh", str(FILES / "boot.sh"), str(host.root), host.name,
        ],
        stdin=subprocess.DEVNULL, stdout=console, stderr=console,
        start_new_session=True,
    )
    _pid_file(host).write_text(f"{proc.pid}\n")
    # The unshare process must outlive this command: nobody waits on it here.
    time.sleep(0.05)
    if proc.poll() is not None:
        raise LabError(f"{host.name} did not boot; see {_dir(host) / 'console.log'}")
    return proc.pid


def stop(host: topology.LabHost, timeout: float = 30.0) -> None:
    """Stop the host's services cleanly, then make sure every process is gone."""
    parent = pid(host)
    if parent is None:
        return
    init = init_pid(host)
    if init:
        # tini passes SIGTERM to lab-init, which stops services in reverse order.
        _signal(init, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid(host) is not None:
        time.sleep(0.1)
    if pid(host) is not None:
        # --kill-child: the namespace's init, and with it every process in the
        # PID namespace, is killed when unshare dies.
        _signal(parent, signal.SIGKILL)
        while pid(host) is not None:
            time.sleep(0.05)


def _signal(target: int, sig: int) -> None:
    try:
        os.kill(target, sig)
    except ProcessLookupError:
        pass


def remove(host: topology.LabHost) -> None:
    """Unmount and delete the host's overlay (its state goes with it)."""
    if is_mounted(host.root):
        run("umount", str(host.root), check=False)
        if is_mounted(host.root):
            run("umount", "--lazy", str(host.root))
    run("rm", "-rf", "--one-file-system", str(_dir(host)))
