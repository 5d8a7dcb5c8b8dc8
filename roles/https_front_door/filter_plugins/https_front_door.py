"""Checks and names for the HTTPS front door, in Python so that unit tests can run them.

Why a filter: certificate SANs need to tell IP addresses from DNS names (IPv4 and IPv6), and an
upstream with a URI part would silently rewrite every path, which Jinja tests cannot judge
without netaddr. ``ipaddress`` and one regular expression can.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ansible.errors import AnsibleFilterError

# A site name is one path segment: /<name>/ (the workspace names of tf_workspace fit).
SITE_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$")
# scheme://host[:port], no path: nginx then passes /<name>/... upstream unchanged.
UPSTREAM_RE = re.compile(r"^https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(:[0-9]{1,5})?$")
DNS_LABEL_RE = re.compile(r"^(\*|[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)$")


def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        return None


def https_front_door_sans(names: Sequence[Any]) -> list[str]:
    """SAN entries for names: ``IP:`` for addresses, ``DNS:`` otherwise; empty and repeated ones dropped."""
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise AnsibleFilterError(f"https_front_door_sans expects a list of names, got {names!r}")
    sans: list[str] = []
    for raw in names:
        name = str(raw if raw is not None else "").strip().rstrip(".")
        if not name:
            continue
        address = _ip(name)
        if address is not None:
            entry = f"IP:{address.compressed}"
        else:
            labels = name.split(".")
            if len(name) > 253 or not all(DNS_LABEL_RE.match(label) for label in labels):
                raise AnsibleFilterError(
                    f"https_front_door: {name!r} is neither an IP address nor a DNS name; "
                    "fix it in https_front_door_extra_names, https_front_door_public_name or the inventory")
            entry = f"DNS:{name.lower()}"
        if entry not in sans:
            sans.append(entry)
    return sans


def https_front_door_url_host(host: Any) -> str:
    """The host part of a URL: IPv6 addresses in brackets."""
    name = str(host).strip()
    address = _ip(name)
    if address is not None and address.version == 6:
        return f"[{address.compressed}]"
    return name


def https_front_door_base_url(host: Any, port: Any) -> str:
    """``https://host[:port]/``, the port left out when it is 443."""
    port = int(port)
    return f"https://{https_front_door_url_host(host)}{'' if port == 443 else f':{port}'}/"


def https_front_door_urls(sites: Sequence[Mapping[str, Any]], base_url: str) -> dict[str, str]:
    """Each site's URL under the base URL: ``{name: base_url + name + "/"}``."""
    return {str(site["name"]): f"{base_url.rstrip('/')}/{site['name']}/" for site in sites}


def https_front_door_check_sites(sites: Any) -> list[dict[str, Any]]:
    """Sites checked and normalised: unique names, upstreams without a URI part, CIDRs as networks."""
    if not isinstance(sites, Sequence) or isinstance(sites, str):
        raise AnsibleFilterError("https_front_door_sites must be a list of {name, upstream, allowed_cidrs}")
    checked: list[dict[str, Any]] = []
    seen: set[str] = set()
    for site in sites:
        if not isinstance(site, Mapping):
            raise AnsibleFilterError(f"https_front_door_sites: {site!r} is not a dict")
        name = str(site.get("name", ""))
        if not SITE_NAME_RE.match(name) or name in {".", ".."}:
            raise AnsibleFilterError(
                f"https_front_door_sites: name {name!r} must be one path segment "
                "(letters, digits, '_', '.', '-'; at most 63)")
        if name in seen:
            raise AnsibleFilterError(f"https_front_door_sites: {name!r} is listed twice")
        seen.add(name)
        upstream = str(site.get("upstream", ""))
        tensorboard = str(site.get("tensorboard_upstream") or "")
        for key, value in (("upstream", upstream), ("tensorboard_upstream", tensorboard)):
            if (value or key == "upstream") and not UPSTREAM_RE.match(value):
                raise AnsibleFilterError(
                    f"https_front_door_sites[{name}]: {key} {value!r} must be http(s)://host[:port] "
                    "without a path (a path would replace /" + name + "/ in every request)")
        cidrs = site.get("allowed_cidrs", [])
        if isinstance(cidrs, str) or not isinstance(cidrs, Sequence):
            raise AnsibleFilterError(f"https_front_door_sites[{name}]: allowed_cidrs must be a list")
        networks: list[str] = []
        for cidr in cidrs:
            try:
                network = ipaddress.ip_network(str(cidr).strip(), strict=False).with_prefixlen
            except ValueError as exc:
                raise AnsibleFilterError(
                    f"https_front_door_sites[{name}]: allowed_cidrs entry {cidr!r} is not a CIDR ({exc})"
                ) from exc
            if network not in networks:
                networks.append(network)
        checked.append({"name": name, "upstream": upstream, "tensorboard_upstream": tensorboard,
                        "allowed_cidrs": networks})
    return checked


class FilterModule:
    """The https_front_door role's filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "https_front_door_sans": https_front_door_sans,
            "https_front_door_url_host": https_front_door_url_host,
            "https_front_door_base_url": https_front_door_base_url,
            "https_front_door_urls": https_front_door_urls,
            "https_front_door_check_sites": https_front_door_check_sites,
        }
