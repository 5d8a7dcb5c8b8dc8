"""Report which Jupyter a workspace image has, as JSON.

Run by the role in a throw-away container of the built image, so the Jupyter configuration it
writes uses the option names that Jupyter reads: notebook 7 runs on jupyter_server 2
(ServerApp, IdentityProvider), the classic notebook 6 reads NotebookApp.
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


notebook = version("notebook")
flavor = "server2" if major(notebook) >= 7 else "classic" if major(notebook) in (5, 6) else "none"
print(json.dumps({
    "python": sys.version.split()[0],
    "notebook": notebook,
    "jupyter_server": version("jupyter_server"),
    "tensorflow": version("tensorflow") or version("tensorflow-cpu") or version("tensorflow-gpu"),
    "jupyter_flavor": flavor,
}))
