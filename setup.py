"""The wheel carries the tflab.provision collection (issue 16).

Everything else is in pyproject.toml. `build_py` generates the collection from the checkout's
roles/, playbooks/library and playbooks/filter_plugins (tflab_provision/collection.py) into the
build tree as `ansible_collections/tflab/provision/`, so it installs next to the tflab_provision
package, where Ansible finds collections on sys.path (as it finds those of the `ansible` package).
An editable install runs from the checkout itself and gets no copy.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildPyWithCollection(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        # Loaded by path: the package's __init__ must not be needed in the isolated build env.
        source = HERE / "tflab_provision" / "collection.py"
        spec = importlib.util.spec_from_file_location("_tflab_collection", source)
        assert spec and spec.loader
        collection = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(collection)
        tree = collection.build_tree(HERE, Path(self.build_lib))
        print(f"collection tree: {tree}")


setup(cmdclass={"build_py": BuildPyWithCollection})
