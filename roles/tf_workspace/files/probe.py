"""Report which Jupyter a workspace image has, as JSON.

Run by the role in a throw-away container of the built image, so the Jupyter configuration it
writes uses the option names that Jupyter reads: notebook 7 runs on jupyter_server 2
(ServerApp, IdentityProvider), the classic notebook 6 reads NotebookApp. It also reports the
image's accounts, which the role's per-workspace /etc/passwd and /etc/group extend.
"""
import importlib.metadata as md
import json
import re
import sys


def version(package):
    try:
        return md.version(package)
    except md.PackageNotFoundError:
        return ""


def major(text):
    match = re.match(r"(\d+)", text)
    return int(match.group(1)) if match else 0


def accounts(path):
    """Names and IDs of an /etc/passwd or /etc/group file, and its text."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    rows = [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]
    return {"text": text if text.endswith("\n") else text + "\n",
            "names": [row[0] for row in rows], "ids": [int(row[2]) for row in rows if row[2].isdigit()]}


notebook = version("notebook")
flavor = "server2" if major(notebook) >= 7 else "classic" if major(notebook) in (5, 6) else "none"
print(json.dumps({
    "python": sys.version.split()[0],
    "notebook": notebook,
    "jupyter_server": version("jupyter_server"),
    "tensorflow": version("tensorflow") or version("tensorflow-cpu") or version("tensorflow-gpu"),
    "jupyter_flavor": flavor,
    # The image's own accounts: a workspace's passwd entry is added to these (never one of them).
    "passwd": accounts("/etc/passwd"),
    "group": accounts("/etc/group"),
}))
