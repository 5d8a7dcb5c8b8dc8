"""The https_front_door role's filters (roles/https_front_door/filter_plugins/https_front_door.py).

They decide what crosses into nginx and into certificates: SAN types, upstreams that must not
rewrite paths, and CIDRs nginx's allow would read differently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ansible.errors import AnsibleFilterError
from pathload import load_module

ROOT = Path(__file__).resolve().parents[2]
fd = load_module("https_front_door_filters",
                 ROOT / "roles" / "https_front_door" / "filter_plugins" / "https_front_door.py")


def site(**extra: Any) -> dict[str, Any]:
    return {"name": "alice", "upstream": "http://172.30.0.18:8888", "allowed_cidrs": ["10.0.0.0/8"], **extra}


@pytest.mark.parametrize(("names", "sans"), [
    (["node1", "10.1.2.3", ""], ["DNS:node1", "IP:10.1.2.3"]),
    (["Node1.Lab.example.", "node1.lab.example", None], ["DNS:node1.lab.example"]),
    (["fd00:0::0010", "[fd00::10]"], ["IP:fd00::10"]),
    (["*.lab.example", "gpu_01"], ["DNS:*.lab.example", "DNS:gpu_01"]),
])
def test_sans_tell_addresses_from_names(names: list[Any], sans: list[str]) -> None:
    assert fd.https_front_door_sans(names) == sans


@pytest.mark.parametrize("bad", [
    ["has space"], ["a..b"], ["-lead.example"], ["x" * 64 + ".example"], "node1"])
def test_sans_refuse_what_is_neither(bad: Any) -> None:
    with pytest.raises(AnsibleFilterError):
        fd.https_front_door_sans(bad)


@pytest.mark.parametrize(("host", "port", "url"), [
    ("node1", 443, "https://node1/"),
    ("10.0.0.5", 8443, "https://10.0.0.5:8443/"),
    ("fd00::5", "443", "https://[fd00::5]/"),
    ("fd00::5", 9443, "https://[fd00::5]:9443/"),
])
def test_base_url(host: str, port: Any, url: str) -> None:
    assert fd.https_front_door_base_url(host, port) == url


def test_urls_per_site() -> None:
    sites = [site(), site(name="bob")]
    assert fd.https_front_door_urls(sites, "https://n:8443/") == {
        "alice": "https://n:8443/alice/", "bob": "https://n:8443/bob/"}


def test_sites_are_normalised() -> None:
    cidrs = ["10.1.2.3/8", "10.0.0.0/8", "fd00::1/64", "192.0.2.7"]
    out = fd.https_front_door_check_sites([site(allowed_cidrs=cidrs)])
    assert out == [{"name": "alice", "upstream": "http://172.30.0.18:8888", "tensorboard_upstream": "",
                    "allowed_cidrs": ["10.0.0.0/8", "fd00::/64", "192.0.2.7/32"]}]


def test_tensorboard_upstream_is_checked_like_the_upstream() -> None:
    out = fd.https_front_door_check_sites([site(tensorboard_upstream="http://172.30.0.18:6006")])
    assert out[0]["tensorboard_upstream"] == "http://172.30.0.18:6006"
    with pytest.raises(AnsibleFilterError, match=r"tensorboard_upstream 'http://172\.30\.0\.18:6006/x'"):
        fd.https_front_door_check_sites([site(tensorboard_upstream="http://172.30.0.18:6006/x")])
    assert fd.https_front_door_check_sites([{"name": "b", "upstream": "https://[fd00::2]:8888"}])[0][
        "allowed_cidrs"] == []


@pytest.mark.parametrize(("sites", "message"), [
    ([site(upstream="http://172.30.0.18:8888/")], "without a path"),
    ([site(upstream="http://172.30.0.18:8888/alice/")], "without a path"),
    ([site(upstream="172.30.0.18:8888")], "without a path"),
    ([site(upstream="http://h:1; deny all")], "without a path"),
    ([site(name="a/b")], "one path segment"),
    ([site(name="..")], "one path segment"),
    ([site(name="a b")], "one path segment"),
    ([site(), site()], "twice"),
    ([site(allowed_cidrs=["10.0.0.300/8"])], "not a CIDR"),
    ([site(allowed_cidrs="10.0.0.0/8")], "must be a list"),
    ([["alice"]], "not a dict"),
    ("alice", "must be a list"),
])
def test_bad_sites_are_refused_with_the_reason(sites: Any, message: str) -> None:
    with pytest.raises(AnsibleFilterError, match=message):
        fd.https_front_door_check_sites(sites)


def test_every_filter_is_registered() -> None:
    assert set(fd.FilterModule().filters()) == {
        "https_front_door_sans", "https_front_door_url_host", "https_front_door_base_url",
        "https_front_door_urls", "https_front_door_check_sites"}
