"""The inventory schema: tflab's shared settings and the per-user workspaces.

Validated before any run, so a typo or a weak secret is reported with its file, field and fix
and no host is contacted. Role variables are checked against each role's own
meta/argument_specs.yml (one source of truth, also enforced by Ansible at run time).
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

USER_NAME = r"^[a-z_][a-z0-9_-]{0,31}$"
SIZE = r"^[0-9]+(\.[0-9]+)?[bkmgBKMG]?$"
# Jupyter Server 2 password hashes; sha1 (the old notebook default) is refused as weak.
ARGON2_HASH = re.compile(r"^argon2:\$argon2id?\$v=\d+\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$")
# Ports inside every workspace container; as host ports they are refused (the role's filter too).
CONTAINER_PORTS = {2222: "the workspace container's internal SSH port",
                   8888: "the workspace container's internal Jupyter port"}


def is_template(value: object) -> bool:
    """Jinja expressions are resolved by Ansible on the host; only literal values are checked."""
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def check_cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a network in CIDR form (e.g. 10.0.0.0/24): {exc}") from exc


def check_abs_path(value: str) -> str:
    path = PurePosixPath(value)
    if not path.is_absolute():
        raise ValueError(f"{value!r} must be an absolute path")
    if ".." in path.parts:
        raise ValueError(f"{value!r} must not contain '..'")
    return value


def check_host_port(value: int) -> int:
    if value in CONTAINER_PORTS:
        raise ValueError(f"{value} is {CONTAINER_PORTS[value]}, which must not be a host port "
                         "(traffic routed straight to containers would match it); choose another "
                         "port, or leave it out to get the one allocated from the uid")
    return value


# A DNS name (one label at least; a leading "*." only where wildcards are allowed).
DNS_NAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
                      r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")


def check_host_name(value: str, wildcard: bool = False) -> str:
    """A host name or IP address as it goes into a URL and a certificate (no scheme, port, path)."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    name = value[2:] if wildcard and value.startswith("*.") else value
    if not DNS_NAME.match(name) or name.replace(".", "").isdigit():
        example = "gpu01.lab.example.org, 192.0.2.11 or fd00::11"
        raise ValueError(f"{value!r} is not a host name or IP address (e.g. {example}); "
                         "give the name alone, without scheme, port or path")
    return value


def check_tls_name(value: str) -> str:
    return check_host_name(value, wildcard=True)


def check_ca_dir(value: str) -> str:
    """A controller directory: absolute, or under the controller user's home (~)."""
    if is_template(value):
        raise ValueError("must be a literal path: tflab reads the CA on the controller itself "
                         "(tflab ca show, workspace URLs), where no Jinja is evaluated")
    if not (value.startswith("/") or value == "~" or value.startswith("~/")):
        raise ValueError(f"{value!r} must be an absolute path on the controller (or start with ~/)")
    if ".." in PurePosixPath(value).parts:
        raise ValueError(f"{value!r} must not contain '..'")
    return value


def check_front_door_port(value: int) -> int:
    if value in CONTAINER_PORTS:
        raise ValueError(f"{value} is {CONTAINER_PORTS[value]}, which must not be a host port; "
                         "choose another port for the front door (defaults: HTTPS 443, redirect 80)")
    return value


def check_gpus(value: Any) -> Any:
    """One clear message instead of one per member of the union (the role's filter agrees)."""
    if value is None or value in ("all", "none"):
        return value
    if not isinstance(value, list):
        raise ValueError(f'must be "all", "none" or a list of GPU indices such as [0, 1]; got {value!r}')
    bad = [g for g in value if isinstance(g, bool) or not isinstance(g, int) or g < 0]
    if bad:
        raise ValueError(f"{bad!r} are not GPU indices (non-negative integers, e.g. [0, 1])")
    if len(set(value)) != len(value):
        raise ValueError(f"{value!r} lists a GPU twice; list each index once")
    return value


Cidr = Annotated[str, AfterValidator(check_cidr)]
AbsPath = Annotated[str, AfterValidator(check_abs_path)]
HostPort = Annotated[int, Field(ge=1024, le=65535), AfterValidator(check_host_port)] | None
# The HTTPS front door may take a privileged port (443); true or "443" are not ports.
HttpsPort = Annotated[int, Field(strict=True, ge=1, le=65535), AfterValidator(check_front_door_port)] | None
# The plain-HTTP port that only redirects to HTTPS; 0 turns the redirect off.
HttpPort = Annotated[int, Field(strict=True, ge=0, le=65535), AfterValidator(check_front_door_port)] | None
HostName = Annotated[str, Field(min_length=1), AfterValidator(check_host_name)]
TlsName = Annotated[str, Field(min_length=1), AfterValidator(check_tls_name)]
# "all", "none" or distinct GPU indices (true or "0" are not indices).
Gpus = Annotated[Literal["all", "none"] | list[int] | None, BeforeValidator(check_gpus)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Dataset(Strict):
    """A host directory mounted read-only into a workspace."""

    src: AbsPath
    dest: AbsPath


class Workspace(Strict):
    """One user's TensorFlow workspace on a host."""

    name: str = Field(pattern=USER_NAME)
    uid: int = Field(ge=1000, le=65533)
    gid: int | None = Field(default=None, ge=1000, le=65533)
    state: Literal["present", "absent"] = "present"
    purge: bool = False
    ssh_port: HostPort = None
    jupyter_port: HostPort = None
    gpus: Gpus = None
    memory: str | None = Field(default=None, pattern=SIZE)
    cpus: float | None = Field(default=None, gt=0)
    shm_size: str | None = Field(default=None, pattern=SIZE)
    pids_limit: int | None = Field(default=None, ge=64)
    allowed_cidrs: list[Cidr] | None = None
    authorized_keys: list[str] = Field(default_factory=list)
    jupyter_password_hash: str | None = None
    datasets: list[Dataset] = Field(default_factory=list)

    @field_validator("jupyter_password_hash")
    @classmethod
    def _password_hash(cls, value: str | None) -> str | None:
        if value is None or is_template(value):
            return value
        if value == "":
            raise ValueError("is empty: set an argon2 hash, or remove it to get a random token")
        if value.startswith("sha1:"):
            raise ValueError("is a salted SHA-1 hash, which is weak: make an argon2 hash with "
                             "`python -c 'from jupyter_server.auth import passwd; print(passwd())'`")
        if not ARGON2_HASH.match(value):
            raise ValueError("must be an argon2 hash ('argon2:$argon2id$…'), never a plain password; "
                             "make one with `python -c 'from jupyter_server.auth import passwd; "
                             "print(passwd())'`")
        return value


class WorkspaceDefaults(Strict):
    """Per-group defaults for workspaces; a workspace's own value wins."""

    gpus: Gpus = None
    memory: str | None = Field(default=None, pattern=SIZE)
    cpus: float | None = Field(default=None, gt=0)
    shm_size: str | None = Field(default=None, pattern=SIZE)
    pids_limit: int | None = Field(default=None, ge=64)


# Settings tflab itself reads on the controller: a Jinja expression cannot be resolved there.
LITERAL_ONLY = frozenset({"tflab_ca_dir"})


class TflabSettings(Strict):
    """The shared `tflab_*` inventory settings (any may be absent in a given file)."""

    tflab_admin_cidrs: list[Cidr] | None = None
    tflab_user_cidrs: list[Cidr] | None = None
    tflab_data_root: str | None = None
    tflab_dataset_roots: list[AbsPath] | None = None
    tflab_workspaces: list[Workspace] | None = None
    tflab_workspace_defaults: WorkspaceDefaults | None = None
    tflab_serial: int | str | None = None
    tflab_max_fail_percent: int | None = Field(default=None, ge=0, le=100)
    tflab_target: str | None = None
    # The hosts' net.ipv4.ip_local_port_range when it is not Linux's 32768-60999 ("LOW-HIGH").
    tflab_ephemeral_port_range: str | list[int] | None = None
    # The HTTPS front door (nginx on each host): its port, and the name in URLs and certificates.
    tflab_https_port: HttpsPort = None
    tflab_http_port: HttpPort = None
    tflab_public_name: HostName | None = None
    tflab_tls_extra_names: list[TlsName] | None = None
    # The lab CA on the controller (default <state dir>/ca): one for the whole inventory.
    tflab_ca_dir: Annotated[str, AfterValidator(check_ca_dir)] | None = None
    # Networks no workspace may ever reach (BMCs, switches, the controller's management LAN).
    tflab_management_cidrs: list[Cidr] | None = None
    # Monitoring and the central journal (the inventory groups tflab_monitoring and tflab_logs):
    # who may scrape the nodes and upload journals (default: those hosts' own addresses), and the
    # address others reach a host at when it is not ansible_host.
    tflab_monitoring_cidrs: list[Cidr] | None = None
    tflab_log_client_cidrs: list[Cidr] | None = None
    tflab_metrics_address: HostName | None = None
    tflab_log_address: HostName | None = None

    @field_validator("tflab_admin_cidrs")
    @classmethod
    def _admin_not_empty(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("is empty: the firewall would lock every admin out of SSH; "
                             "list the networks you administer from")
        return value

    @field_validator("tflab_data_root")
    @classmethod
    def _root(cls, value: str | None) -> str | None:
        return None if value is None or is_template(value) else check_abs_path(value)

    @model_validator(mode="before")
    @classmethod
    def _skip_templates(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if k in LITERAL_ONLY or not is_template(v)}
        return data


TFLAB_KEYS = frozenset(TflabSettings.model_fields)
HTTPS_PORT_DEFAULT, HTTP_PORT_DEFAULT = 443, 80
