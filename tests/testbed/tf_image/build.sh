#!/usr/bin/env bash
# Test bed only: make sure the real TensorFlow 2.9.3 test image exists (cached by tag + recipe hash).
# Usage: tests/testbed/tf_image/build.sh   (callers hold /tmp/tflab-heavy.lock; this script does not,
# so it can run inside a locked Molecule run without deadlocking). Builds are serialised on a lock
# of their own: Molecule scenarios that run side by side (.ci/run) may ask at the same moment.
set -euo pipefail
if [ "${TFLAB_TF_IMAGE_LOCKED:-}" != 1 ]; then
  exec env TFLAB_TF_IMAGE_LOCKED=1 flock /tmp/tflab-tf-image.lock "$0" "$@"
fi
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
venv=${TFLAB_VENV:-/tmp/venv}
start=$(date +%s)
"$here/rootfs.sh"
ANSIBLE_CONFIG="$repo/ansible.cfg" ANSIBLE_ROLES_PATH="$repo/roles" ANSIBLE_CACHE_PLUGIN=memory \
  ANSIBLE_LOCALHOST_WARNING=false ANSIBLE_INVENTORY_UNPARSED_WARNING=false \
  "$venv/bin/ansible-playbook" -i localhost, -e "ansible_python_interpreter=$venv/bin/python" "$here/build.yml" "$@"
echo "tf test image ready in $(( $(date +%s) - start )) s"
