"""Address filters for the firewall role, with the standard library only.

ansible.utils' ipaddr filters need netaddr on the controller; these few checks do not justify
the extra dependency. They validate CIDRs before any rule is written (a typo must fail the
run, not open or close the wrong hosts) and decide whether a rule set keeps the connection
the run itself uses.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

try:
    from ansible.errors import AnsibleFilterError
except ImportError:  # unit tests run without Ansible on the path as well
    AnsibleFilterError = ValueError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _network(value: Any) -> Network:
    """Parse one CIDR (a bare address means a single host); refuse host bits set."""
    text = str(value).strip()
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise AnsibleFilterError(
            f"{text!r} is not a valid CIDR ({exc}); write e.g. 192.0.2.0/24 or 2001:db8::/64"
        ) from exc


def _address(value: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Parse an address; an IPv4-mapped IPv6 address counts as its IPv4 form."""
    addr = ipaddress.ip_address(str(value).strip().split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def tflab_cidrs(values: Iterable[Any] | None, family: int | None = None) -> list[str]:
    """Validated, de-duplicated CIDRs in input order, optionally only IPv4 (4) or IPv6 (6)."""
    if family not in (None, 4, 6):
        raise AnsibleFilterError(f"family must be 4 or 6, not {family!r}")
    seen: list[str] = []
    for value in values or []:
        net = _network(value)
        if family is not None and net.version != family:
            continue
        text = str(net)
        if text not in seen:
            seen.append(text)
    return seen


def tflab_cidr_contains(cidrs: Iterable[Any] | None, address: Any) -> bool:
    """True when address lies in one of the CIDRs."""
    addr = _address(address)
    return any(addr in _network(c) for c in cidrs or [] if _network(c).version == addr.version)


def tflab_rules_allow(
    rules: Iterable[Mapping[str, Any]] | None, address: Any, port: Any, proto: str = "tcp"
) -> bool:
    """True when a rule ({port, proto, cidrs}) admits a new connection from address to port."""
    for rule in rules or []:
        if int(rule.get("port", -1)) != int(port):
            continue
        if str(rule.get("proto", "tcp")).lower() != proto.lower():
            continue
        if tflab_cidr_contains(rule.get("cidrs", []), address):
            return True
    return False


def _is_address(value: Any) -> bool:
    try:
        _address(value)
    except ValueError:
        return False
    return True


def tflab_host_targets(hosts: Iterable[str] | None, hostvars: Mapping[str, Any],
                       address_var: str = "tflab_metrics_address") -> list[dict[str, str]]:
    """{name, address} per host for scrape and upload targets: address_var when the inventory
    sets it, else ansible_host, else the inventory name."""
    targets = []
    for host in hosts or []:
        hv = hostvars[host]
        address = hv.get(address_var) or hv.get("ansible_host") or host
        targets.append({"name": str(host), "address": str(address)})
    return targets


def tflab_host_cidrs(hosts: Iterable[str] | None, hostvars: Mapping[str, Any], setting: str,
                     address_var: str = "tflab_metrics_address") -> list[str]:
    """One /32 or /128 per host, for firewall sources: address_var or ansible_host when that is
    an address, else the host's default IPv4 address from its facts. A host with neither fails
    the run with the setting that names the sources by hand."""
    cidrs: list[str] = []
    for host in hosts or []:
        hv = hostvars[host]
        facts = hv.get("ansible_facts") or {}
        candidates = [hv.get(address_var), hv.get("ansible_host"),
                      (facts.get("default_ipv4") or {}).get("address")]
        found = next((str(c) for c in candidates if c and _is_address(c)), None)
        if found is None:
            raise AnsibleFilterError(
                f"cannot tell {host}'s address for the firewall (its ansible_host is a name and its "
                f"facts have no default IPv4 address): set {setting} to the CIDRs it connects from, "
                f"or {address_var} on {host}")
        net = ipaddress.ip_network(str(_address(found)))
        if str(net) not in cidrs:
            cidrs.append(str(net))
    return cidrs


class FilterModule:
    """Registers the tflab_* address filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "tflab_cidrs": tflab_cidrs,
            "tflab_cidr_contains": tflab_cidr_contains,
            "tflab_rules_allow": tflab_rules_allow,
            "tflab_host_targets": tflab_host_targets,
            "tflab_host_cidrs": tflab_host_cidrs,
        }
