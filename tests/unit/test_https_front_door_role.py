"""The https_front_door role's inputs: defaults, argument spec and README say the same."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROLE = Path(__file__).resolve().parents[2] / "roles" / "https_front_door"
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
SPEC = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]


def test_every_default_is_in_the_spec_with_the_same_value() -> None:
    assert set(DEFAULTS) == set(SPEC)
    for name, value in DEFAULTS.items():
        assert SPEC[name].get("default") == value, name
        assert name.startswith("https_front_door_")


def test_every_default_has_a_comment() -> None:
    lines = (ROLE / "defaults" / "main.yml").read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^https_front_door_\w+:", line):
            above = [x for x in lines[max(0, i - 3):i] if x.strip()]
            # A comment line, or a sibling (a cert/key pair shares one comment).
            assert above and (above[-1].startswith("#") or re.match(r"^https_front_door_\w+:", above[-1])), \
                line


def test_the_readme_lists_every_variable_in_spec_order() -> None:
    readme = (ROLE / "README.md").read_text()
    listed = re.findall(r"^\| `(https_front_door_\w+)` \|", readme, flags=re.M)
    assert listed == list(SPEC)
