#!/usr/bin/python
"""Ansible module: merge settings into Docker's daemon.json without clobbering it.

Why a module: daemon.json is shared by the admin, docker_engine and nvidia_container_toolkit.
A slurp/combine/copy chain in each role would duplicate the parse-merge-validate-write logic
and could not refuse an unreadable live file before anything is touched. This module reads
the live file, deep-merges, validates the candidate and replaces the file atomically, and
only when the content changes.
"""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: docker_daemon_json
short_description: Merge settings into Docker's daemon.json, validate, write only on change
description:
  - Reads the live daemon.json (a missing or empty file counts as C({})). An unreadable or
    invalid live file fails the task with a clear message and nothing is written.
  - Deep-merges O(settings) into it (mappings merge key by key; lists and scalars from
    O(settings) replace the live value, or with O(list_merge=union) lists gain the missing items),
    removes O(remove_keys), checks the candidate and, when O(validate) is set, runs that command
    on a temporary copy before it atomically replaces the live file.
  - Keys that O(settings) does not mention are kept, so an admin's own keys survive.
  - daemon.json cannot carry a comment (dockerd rejects unknown keys), so no managed header.
version_added: "0.1.0"
options:
  path:
    description: The daemon configuration file.
    type: path
    default: /etc/docker/daemon.json
  settings:
    description: Keys to merge into the document.
    type: dict
    default: {}
  remove_keys:
    description: Top-level keys to delete (for settings a role no longer wants).
    type: list
    elements: str
    default: []
  list_merge:
    description: How a list in O(settings) meets a list already in the file.
    type: str
    choices: [replace, union]
    default: replace
  validate:
    description:
      - Command run on the candidate before it replaces the live file; C(%s) is the candidate path.
      - For example C(dockerd --validate --config-file %s) on Docker 23.0 and later.
    type: str
  state:
    description: C(merged) writes; C(read) only parses and returns the live document.
    type: str
    choices: [merged, read]
    default: merged
extends_documentation_fragment: [files]
author: tflab-provision maintainers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Make nvidia the default runtime, keeping every other key
  docker_daemon_json:
    settings:
      default-runtime: nvidia
      runtimes:
        nvidia: {path: /usr/bin/nvidia-container-runtime, runtimeArgs: []}
    validate: dockerd --validate --config-file %s
  notify: Restart docker
"""

RETURN = r"""
config:
  description:
    - The document after the merge (the live one for O(state=read)).
    - Credentials in URLs (user:password@) read C(***@), here and in the diff.
  returned: always
  type: dict
previous:
  description: The live document before the merge (URL credentials masked).
  returned: always
  type: dict
"""

import json
import os
import re
import shlex
import tempfile
from typing import Any

from ansible.module_utils.basic import AnsibleModule

CGROUP_DRIVER_PREFIX = "native.cgroupdriver="
# user:password@ in URLs (proxies, registry mirrors): masked in every result and diff.
URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s\"]+@")


class DaemonJsonError(Exception):
    """A problem the admin must fix by hand; carries the message shown to them."""


def parse_document(text: str, path: str) -> dict[str, Any]:
    """Parse daemon.json text; an empty file is an empty document, as dockerd treats it."""
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise DaemonJsonError(
            f"{path} is not valid JSON ({exc}). Docker was left untouched: fix or remove "
            "the file by hand (dockerd would refuse to start with it), then re-run."
        ) from exc
    if not isinstance(data, dict):
        raise DaemonJsonError(
            f"{path} holds a JSON {type(data).__name__}, not an object. Docker was left "
            "untouched: fix the file by hand, then re-run."
        )
    return data


def deep_merge(base: dict[str, Any], extra: dict[str, Any], list_merge: str) -> dict[str, Any]:
    """Return base updated by extra: mappings merge recursively, lists per list_merge."""
    merged = dict(base)
    for key, value in extra.items():
        current = merged.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            merged[key] = deep_merge(current, value, list_merge)
        elif list_merge == "union" and isinstance(current, list) and isinstance(value, list):
            merged[key] = current + [item for item in value if item not in current]
        else:
            merged[key] = value
    return merged


def check_document(doc: dict[str, Any]) -> list[str]:
    """Checks dockerd of every version would fail on; what --validate cannot run for 20.10."""
    problems: list[str] = []
    drivers = {
        opt[len(CGROUP_DRIVER_PREFIX) :]
        for opt in doc.get("exec-opts", [])
        if isinstance(opt, str) and opt.startswith(CGROUP_DRIVER_PREFIX)
    }
    if len(drivers) > 1:
        problems.append(f"exec-opts sets several cgroup drivers: {sorted(drivers)}")
    default_runtime = doc.get("default-runtime")
    builtin = {"runc", "io.containerd.runc.v2"}
    runtimes = doc.get("runtimes", {})
    if default_runtime and default_runtime not in builtin and default_runtime not in runtimes:
        problems.append(f"default-runtime {default_runtime!r} is not defined under runtimes")
    for name, spec in doc.get("runtimes", {}).items():
        if not isinstance(spec, dict) or not spec.get("path"):
            problems.append(f"runtimes.{name} needs a path")
    log_opts = doc.get("log-opts", {})
    if not isinstance(log_opts, dict):
        problems.append("log-opts must be an object")
    else:
        problems.extend(
            f"log-opts.{name} must be a string (dockerd rejects {value!r})"
            for name, value in log_opts.items()
            if not isinstance(value, str)
        )
    for key in ("registry-mirrors", "insecure-registries", "default-address-pools", "exec-opts"):
        if key in doc and not isinstance(doc[key], list):
            problems.append(f"{key} must be a list")
    return problems


def mask_credentials(value: Any) -> Any:
    """The value with the credentials of every URL in it replaced by ***."""
    if isinstance(value, str):
        return URL_CREDENTIALS.sub(r"\g<scheme>***@", value)
    if isinstance(value, dict):
        return {key: mask_credentials(item) for key, item in value.items()}
    if isinstance(value, list):
        return [mask_credentials(item) for item in value]
    return value


def render(doc: dict[str, Any]) -> str:
    """Serialise stably so that an unchanged document gives byte-identical output."""
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def run_module() -> None:
    """Entry point: read, merge, check, validate, write."""
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "default": "/etc/docker/daemon.json"},
            "settings": {"type": "dict", "default": {}},
            # Names of daemon.json keys, never their values ("keys" is not a secret here).
            "remove_keys": {"type": "list", "elements": "str", "default": [], "no_log": False},
            "list_merge": {"type": "str", "choices": ["replace", "union"], "default": "replace"},
            "validate": {"type": "str"},
            "state": {"type": "str", "choices": ["merged", "read"], "default": "merged"},
        },
        add_file_common_args=True,
        supports_check_mode=True,
    )
    path: str = module.params["path"]

    text = ""
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            module.fail_json(msg=f"Cannot read {path}: {exc}. Docker was left untouched.")
    try:
        previous = parse_document(text, path)
    except DaemonJsonError as exc:
        module.fail_json(msg=str(exc), path=path)

    if module.params["state"] == "read":
        shown = mask_credentials(previous)
        module.exit_json(changed=False, config=shown, previous=shown, path=path)

    merged = deep_merge(previous, module.params["settings"], module.params["list_merge"])
    for key in module.params["remove_keys"]:
        merged.pop(key, None)

    problems = check_document(merged)
    if problems:
        module.fail_json(
            msg=f"Refusing to write {path}: " + "; ".join(problems) + ". Docker was left untouched.",
            config=mask_credentials(merged),
            previous=mask_credentials(previous),
        )

    content = render(merged)
    changed = not os.path.exists(path) or content != text
    diff = {"before": mask_credentials(text), "after": mask_credentials(content),
            "before_header": path, "after_header": path}

    if changed and not module.check_mode:
        directory = os.path.dirname(path) or "."
        if not os.path.isdir(directory):
            os.makedirs(directory, mode=0o755)
        fd, tmp_path = tempfile.mkstemp(prefix=".daemon.json.", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(content)
            command = module.params["validate"]
            if command:
                if "%s" not in command:
                    module.fail_json(msg=f"validate must contain %s: {command!r}")
                argv = [arg.replace("%s", tmp_path) for arg in shlex.split(command)]
                rc, out, err = module.run_command(argv)
                if rc != 0:
                    module.fail_json(
                        msg=f"The merged {path} failed validation ({command}); the live file "
                        "and Docker were left untouched.",
                        rc=rc,
                        stdout=out,
                        stderr=mask_credentials(err),
                        config=mask_credentials(merged),
                    )
            os.chmod(tmp_path, 0o644)
            module.atomic_move(tmp_path, path)
        finally:
            if os.path.exists(tmp_path):
                os.unlink(tmp_path)

    file_args = module.load_file_common_arguments(module.params, path=path)
    if not module.check_mode or os.path.exists(path):
        changed = module.set_fs_attributes_if_different(file_args, changed)
    module.exit_json(changed=changed, config=mask_credentials(merged),
                     previous=mask_credentials(previous), path=path, diff=diff)


def main() -> None:
    """Run as an Ansible module."""
    run_module()


if __name__ == "__main__":
    main()
