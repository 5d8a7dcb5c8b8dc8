"""Sandbox hosts: local systemd containers that stand in for bare servers.

`tflab demo` and the test bed provision these exactly as they provision real servers: the
same playbooks over SSH, as a sudo-capable admin user. Only the machine is simulated. Images
are built locally with debootstrap (no registry is assumed reachable) and cached by tag; the
recipe's hash is kept in an image label so a changed recipe rebuilds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

log = logging.getLogger(__name__)

SANDBOX_LABEL = "io.tflab.sandbox"
RECIPE_LABEL = "io.tflab.recipe"
ADMIN_USER = "tflab-admin"

# Every capability Docker 20.10 knows except SYS_RESOURCE, which root lacks on some CI machines
# (so --privileged fails there). Docker 20.10 rejects BPF, PERFMON and CHECKPOINT_RESTORE.
# Listing them keeps systemd, iptables and a nested dockerd working.
HOST_CAPABILITIES: tuple[str, ...] = (
    "AUDIT_CONTROL", "AUDIT_READ", "AUDIT_WRITE", "BLOCK_SUSPEND",
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "IPC_LOCK", "IPC_OWNER",
    "KILL", "LEASE", "LINUX_IMMUTABLE", "MAC_ADMIN", "MAC_OVERRIDE", "MKNOD", "NET_ADMIN",
    "NET_BIND_SERVICE", "NET_BROADCAST", "NET_RAW", "SETFCAP", "SETGID", "SETPCAP",
    "SETUID", "SYS_ADMIN", "SYS_BOOT", "SYS_CHROOT", "SYS_MODULE", "SYS_NICE", "SYS_PACCT",
    "SYS_PTRACE", "SYS_RAWIO", "SYS_TIME", "SYS_TTY_CONFIG", "SYSLOG", "WAKE_ALARM",
)

# What a minimal Debian server install has that Ansible and these roles rely on.
BASE_PACKAGES: tuple[str, ...] = (
    "python3", "systemd", "systemd-sysv", "openssh-server", "sudo", "iproute2", "procps",
    "ca-certificates", "dbus",
)

# Run once inside the fresh root file system: the image's "cloud-init".
_ROOTFS_SETUP = f"""
set -eu
# Each host generates its own SSH host keys on first boot, like a freshly installed server.
rm -f /etc/ssh/ssh_host_*
mkdir -p /etc/systemd/system/ssh.service.d
printf '%s\\n' '[Service]' 'ExecStartPre=' 'ExecStartPre=/usr/bin/ssh-keygen -A' \\
  'ExecStartPre=/usr/sbin/sshd -t' > /etc/systemd/system/ssh.service.d/10-hostkeys.conf
: > /etc/machine-id
useradd --create-home --shell /bin/bash --groups sudo {ADMIN_USER}
printf '{ADMIN_USER} ALL=(ALL) NOPASSWD:ALL\\n' > /etc/sudoers.d/{ADMIN_USER}
chmod 0440 /etc/sudoers.d/{ADMIN_USER}
passwd --lock root
# A container gets a read-only /proc/sys; a real server does not. dockerd needs to write its own
# network namespace's net.* settings (e.g. route_localnet with userland-proxy off), so /proc/sys/net
# is made writable before Docker starts. Only net.* of the host's own namespace becomes writable.
cat > /etc/systemd/system/tflab-sandbox-proc-sys-net.service <<'UNIT'
[Unit]
Description=tflab sandbox: writable /proc/sys/net, as on a real server
DefaultDependencies=no
Before=docker.service network-pre.target
ConditionPathIsReadWrite=!/proc/sys/net

[Service]
Type=oneshot
RemainAfterExit=true
ExecStart=/bin/mount --bind /proc/sys/net /proc/sys/net
ExecStart=/bin/mount -o remount,bind,rw /proc/sys/net

[Install]
WantedBy=sysinit.target
UNIT
systemctl enable tflab-sandbox-proc-sys-net.service
# Units that cannot work in a container and only add noise.
systemctl mask getty@tty1.service serial-getty@.service systemd-udevd.service \\
  systemd-firstboot.service sys-kernel-config.mount 2>/dev/null || true
apt-get clean
rm -rf /var/lib/apt/lists/*
"""


class SandboxError(RuntimeError):
    """A sandbox operation failed; the message says what to do."""


# The test bed's one switch between the explicit capability list (machines where root lacks
# CAP_SYS_RESOURCE, so --privileged fails) and `--privileged` (ordinary CI runners). Every
# molecule.yml systemd platform reads it too (privileged: ${TFLAB_TESTBED_PRIVILEGED:-false}).
PRIVILEGED_ENV = "TFLAB_TESTBED_PRIVILEGED"


def privileged_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """TFLAB_TESTBED_PRIVILEGED as a bool: unset or "false" is False, "true" is True."""
    value = (os.environ if environ is None else environ).get(PRIVILEGED_ENV, "").strip().lower()
    if value in ("", "false"):
        return False
    if value == "true":
        return True
    raise SandboxError(f"{PRIVILEGED_ENV}={value!r}: set it to true or false (Molecule reads it as YAML)")


@dataclass(frozen=True)
class BaseImageRecipe:
    """How a bare-host image is made: a Debian suite by debootstrap, plus _ROOTFS_SETUP."""

    suite: str = "bookworm"
    mirror: str = "http://deb.debian.org/debian"
    tag: str = "tflab/bare-host:debian12"
    packages: tuple[str, ...] = BASE_PACKAGES
    setup: str = _ROOTFS_SETUP
    command: str = '["/lib/systemd/systemd"]'

    def digest(self) -> str:
        text = json.dumps([self.suite, self.packages, self.setup, self.command])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# The OS image a lab without Docker Hub builds its TensorFlow image on (tf_workspace's pypi
# source): what a local mirror of debian:bullseye would serve. Python 3.9 has TF 2.9 wheels.
WORKSPACE_OS_RECIPE = BaseImageRecipe(
    suite="bullseye", tag="tflab/debian:bullseye",
    packages=("python3", "python3-pip", "ca-certificates"),
    setup="apt-get clean; rm -rf /var/lib/apt/lists/*", command='["/bin/bash"]')


@dataclass(frozen=True)
class SandboxHost:
    """One running sandbox host and how to reach it over SSH."""

    name: str
    ssh_port: int
    address: str | None = None
    # Its sshd's Ed25519 public key ("ssh-ed25519 AAAA..."), read through the Docker engine.
    host_key: str = ""


@dataclass
class Docker:
    """The docker CLI, run as a subprocess (no daemon API version coupling)."""

    executable: str = "docker"
    extra_env: dict[str, str] = field(default_factory=dict)

    def run(self, *args: str, check: bool = True, stdin: bytes | None = None) -> str:
        proc = subprocess.run(
            [self.executable, *args], input=stdin, capture_output=True, check=False,
            env={**os.environ, **self.extra_env},
        )
        if check and proc.returncode != 0:
            raise SandboxError(
                f"docker {' '.join(args[:3])} failed: {proc.stderr.decode(errors='replace').strip()}"
            )
        return proc.stdout.decode(errors="replace")

    def ok(self, *args: str) -> bool:
        return subprocess.run(
            [self.executable, *args], capture_output=True, check=False
        ).returncode == 0


def require_engine(docker: Docker) -> None:
    """Fail with the fix when no Docker engine answers (the sandbox needs one locally)."""
    if shutil.which(docker.executable) is None:
        raise SandboxError("the docker CLI is not installed: apt-get install docker.io")
    if not docker.ok("info"):
        raise SandboxError(
            "no Docker engine answers on this machine. Start one (systemctl start docker, or "
            "`scripts/testbed ensure-engine` where systemd is not PID 1) and try again."
        )


def image_recipe_digest(docker: Docker, tag: str) -> str | None:
    if not docker.ok("image", "inspect", tag):
        return None
    out = docker.run("image", "inspect", "--format", "{{json .Config.Labels}}", tag)
    labels = json.loads(out) or {}
    value = labels.get(RECIPE_LABEL)
    return str(value) if value else None


def ensure_base_image(docker: Docker, recipe: BaseImageRecipe) -> str:
    """Build the bare-host image unless an image of the same recipe is already tagged."""
    if image_recipe_digest(docker, recipe.tag) == recipe.digest():
        log.info("bare-host image %s is current", recipe.tag)
        return recipe.tag
    if shutil.which("debootstrap") is None:
        raise SandboxError("debootstrap is needed to build the sandbox image: apt-get install debootstrap")
    with tempfile.TemporaryDirectory(prefix="tflab-rootfs-", dir="/var/tmp") as tmp:
        rootfs = Path(tmp) / "rootfs"
        started = time.monotonic()
        cmd = [
            "debootstrap", "--variant=minbase", f"--include={','.join(recipe.packages)}",
            recipe.suite, str(rootfs), recipe.mirror,
        ]
        proc = subprocess.run(cmd, capture_output=True, check=False)
        if proc.returncode != 0:
            tail = proc.stdout.decode(errors="replace")[-2000:]
            raise SandboxError(f"debootstrap of {recipe.suite} from {recipe.mirror} failed:\n{tail}")
        setup = subprocess.run(["chroot", str(rootfs), "/bin/sh", "-c", recipe.setup],
                               capture_output=True, check=False)
        if setup.returncode != 0:
            raise SandboxError(f"image setup failed: {setup.stderr.decode(errors='replace')}")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            [docker.executable, "import",
             "--change", f"CMD {recipe.command}",
             "--change", f"LABEL {RECIPE_LABEL}={recipe.digest()}",
             "-", recipe.tag],
            stdin=tar.stdout, capture_output=True, check=False,
        )
        tar.wait()
        if imported.returncode != 0 or tar.returncode != 0:
            raise SandboxError(f"docker import failed: {imported.stderr.decode(errors='replace')}")
        log.info("built %s in %.0f s", recipe.tag, time.monotonic() - started)
    return recipe.tag


def host_run_args(
    name: str,
    image: str,
    *,
    privileged: bool,
    network: str | None = None,
    address: str | None = None,
    extra_ports: Sequence[int] = (),
) -> list[str]:
    """`docker run` arguments for a systemd bare host (see TESTBED.md for why each is there)."""
    args = ["run", "--detach", "--name", name, "--hostname", name,
            "--label", f"{SANDBOX_LABEL}=1",
            "--cgroupns", "host", "--volume", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
            "--tmpfs", "/run", "--tmpfs", "/run/lock", "--stop-signal", "SIGRTMIN+3",
            # A nested dockerd needs overlay2 on a real file system, not on our overlay root.
            "--volume", "/var/lib/docker",
            "--publish", "127.0.0.1::22"]
    for port in extra_ports:
        args += ["--publish", f"127.0.0.1::{port}"]
    if privileged:
        args.append("--privileged")
    else:
        for cap in HOST_CAPABILITIES:
            args += ["--cap-add", cap]
        args += ["--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined"]
    if network:
        args += ["--network", network]
        if address:
            args += ["--ip", address]
    args += [image, "/lib/systemd/systemd"]
    return args


def wait_for(predicate_cmd: Sequence[str], docker: Docker, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if docker.ok(*predicate_cmd):
            return
        time.sleep(0.5)
    raise SandboxError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def published_port(docker: Docker, name: str, port: int = 22) -> int:
    """The loopback port where the sandbox host's `port` is reachable from this machine."""
    out = docker.run("port", name, f"{port}/tcp").strip().splitlines()
    for line in out:
        if line.startswith("127.0.0.1:"):
            return int(line.rsplit(":", 1)[1])
    raise SandboxError(f"sandbox host {name} does not publish port {port}")


def copy_image_to_host(docker: Docker, host: str, image: str, path: str) -> None:
    """Put an image on a sandbox host as a `docker save` file (how an air-gapped lab gets it)."""
    save = subprocess.Popen([docker.executable, "save", image], stdout=subprocess.PIPE)
    load = subprocess.run([docker.executable, "exec", "-i", host, "sh", "-c",
                           f"mkdir -p {shlex.quote(str(Path(path).parent))} && cat > {shlex.quote(path)}"],
                          stdin=save.stdout, capture_output=True, check=False)
    save.wait()
    if save.returncode != 0 or load.returncode != 0:
        raise SandboxError(f"copying {image} to {host} failed: {load.stderr.decode(errors='replace')}")


def start_host(
    docker: Docker,
    name: str,
    image: str,
    public_key: str,
    *,
    privileged: bool = False,
    network: str | None = None,
    address: str | None = None,
    extra_ports: Sequence[int] = (),
) -> SandboxHost:
    """Start (or reuse) a sandbox host and install the controller's key for the admin user."""
    if not docker.ok("container", "inspect", name):
        docker.run(*host_run_args(name, image, privileged=privileged, network=network,
                                  address=address, extra_ports=extra_ports))
    elif docker.run("container", "inspect", "--format", "{{.State.Running}}", name).strip() != "true":
        docker.run("start", name)
    wait_for(["exec", name, "systemctl", "is-active", "--quiet", "ssh.service"], docker, 90,
             f"sshd in sandbox host {name}")
    home = f"/home/{ADMIN_USER}"
    script = (
        f"install -d -m 0700 -o {ADMIN_USER} -g {ADMIN_USER} {home}/.ssh && "
        f"cat > {home}/.ssh/authorized_keys && "
        f"chown {ADMIN_USER}: {home}/.ssh/authorized_keys && chmod 0600 {home}/.ssh/authorized_keys"
    )
    docker.run("exec", "-i", name, "sh", "-c", script, stdin=public_key.encode())
    host_key = " ".join(docker.run("exec", name, "cat", "/etc/ssh/ssh_host_ed25519_key.pub").split()[:2])
    return SandboxHost(name=name, ssh_port=published_port(docker, name), address=address, host_key=host_key)


def remove_host(docker: Docker, name: str) -> None:
    if docker.ok("container", "inspect", name):
        docker.run("rm", "--force", "--volumes", name)


def ensure_ssh_key(state_dir: Path) -> Path:
    """The controller's key for sandbox hosts (kept in the state dir, mode 0600)."""
    key = state_dir / "sandbox" / "id_ed25519"
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tflab-sandbox",
                        "-f", str(key)], check=True)
    return key


def inventory_path(state_dir: Path, prefix: str) -> Path:
    """One inventory file per host-name prefix, so two sandboxes never overwrite each other's."""
    return state_dir / "sandbox" / f"{prefix}.yml"


def write_inventory(state_dir: Path, prefix: str, hosts: Sequence[SandboxHost], key: Path) -> Path:
    """An Ansible inventory for sandbox hosts: SSH to the published port as the admin user, with
    each host's key pinned in the state dir's known_hosts (read through the engine, never trusted
    on first use; Mitogen's SSH, the accelerator's, insists on known keys)."""
    known_hosts = state_dir / "sandbox" / "known_hosts"
    for host in hosts:
        # A recreated container reuses a port with new host keys: forget the old ones.
        if known_hosts.exists():
            subprocess.run(["ssh-keygen", "-q", "-R", f"[127.0.0.1]:{host.ssh_port}",
                            "-f", str(known_hosts)], capture_output=True, check=False)
    with known_hosts.open("a") as pinned:
        for host in hosts:
            if host.host_key:
                pinned.write(f"[127.0.0.1]:{host.ssh_port} {host.host_key}\n")
    known_hosts.chmod(0o600)
    ssh_args = (f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes "
                "-o IdentitiesOnly=yes")
    inventory = {
        "all": {
            "children": {
                "sandbox": {
                    "hosts": {
                        h.name: {"ansible_host": "127.0.0.1", "ansible_port": h.ssh_port}
                        for h in hosts
                    },
                    "vars": {
                        "ansible_user": ADMIN_USER,
                        "ansible_ssh_private_key_file": str(key),
                        "ansible_ssh_common_args": ssh_args,
                    },
                }
            }
        }
    }
    path = inventory_path(state_dir, prefix)
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return path
