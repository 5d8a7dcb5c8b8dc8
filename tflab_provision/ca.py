"""The lab CA on the controller, as users need it to trust their workspaces' HTTPS URLs.

The Ansible side creates it during `tflab apply` in `<ca dir>/lab-ca.crt` and `lab-ca.key`
(0600); the CA dir is `tflab_ca_dir` from the inventory, else `<state dir>/ca`, and the CLI
hands the effective one to every playbook as the extra var `tflab_ca_dir`. This module only
ever opens the certificate: the key is never read, so it cannot leak into any output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .runner import ConfigError

CA_CERT = "lab-ca.crt"
CA_KEY = "lab-ca.key"  # named for the docs and the playbook; never opened here


class NoLabCA(ConfigError):
    """There is no CA certificate (yet): `tflab apply` creates it."""


@dataclass(frozen=True)
class LabCA:
    path: Path
    pem: str  # the certificate alone, re-encoded: whatever else the file holds is never printed
    sha256_fingerprint: str  # AB:CD:… as `openssl x509 -noout -fingerprint -sha256` prints it
    subject: str  # RFC 4514
    not_before: datetime
    not_after: datetime

    @property
    def expired(self) -> bool:
        return datetime.now(timezone.utc) >= self.not_after

    def as_json(self) -> dict[str, object]:
        return {"path": str(self.path), "certificate": self.pem,
                "sha256_fingerprint": self.sha256_fingerprint, "subject": self.subject,
                "not_before": self.not_before.isoformat(), "not_after": self.not_after.isoformat(),
                "expired": self.expired}


def default_ca_dir(state_root: Path) -> Path:
    return state_root / "ca"


def ca_dir(state_root: Path, settings: Sequence[tuple[str, object]]) -> Path:
    """The effective CA dir from every place the inventory and -e files set tflab_ca_dir
    (validated there: literal, absolute or ~/); one CA per inventory, so one value."""
    from .config import check_ca_dir

    for where, value in settings:
        if value is not None:
            try:
                check_ca_dir(str(value))
            except ValueError as exc:
                raise ConfigError(f"{where}: {exc}") from exc
    values = {str(v) for _, v in settings if v is not None}
    if len(values) > 1:
        where = "; ".join(f"{w} = {v}" for w, v in settings if v is not None)
        raise ConfigError(f"tflab_ca_dir must be one directory for the whole inventory (one lab CA "
                          f"signs every host), but it is set differently: {where}; set it once, "
                          "in group_vars/all")
    chosen = Path(values.pop()).expanduser() if values else default_ca_dir(state_root)
    return chosen.absolute()


def fingerprint(der_digest: bytes) -> str:
    return der_digest.hex(":").upper()


def load_lab_ca(directory: Path) -> LabCA:
    """The CA certificate of `directory`; NoLabCA when there is none yet."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.serialization import Encoding

    path = directory / CA_CERT
    if not path.is_file():
        raise NoLabCA(f"no lab CA yet at {path}: run tflab apply first")
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError as exc:
        raise ConfigError(f"{path} is not a PEM certificate ({exc}); remove it and run tflab apply "
                          "to make a new lab CA (every host certificate is then re-issued)") from exc
    return LabCA(path=path, pem=cert.public_bytes(Encoding.PEM).decode(),
                 sha256_fingerprint=fingerprint(cert.fingerprint(hashes.SHA256())),
                 subject=cert.subject.rfc4514_string(),
                 not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc)


def find_lab_ca(directory: Path) -> LabCA | None:
    """The CA when it exists (for fingerprints next to URLs); None before the first apply."""
    try:
        return load_lab_ca(directory)
    except NoLabCA:
        return None
