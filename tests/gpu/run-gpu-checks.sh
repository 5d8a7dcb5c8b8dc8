#!/usr/bin/env bash
# GPU proof for issue 4: on a machine with an NVIDIA GPU and an installed driver, run the
# nvidia_gpu_facts module and the nvidia_driver role's detection and verification against
# localhost (no install, no configuration, no reboot) and print what they report.
# Needs ansible-core (the project's venv or `pip install ansible-core`); run as root so the module
# can see every process holding /dev/nvidia* (as a user it sees only that user's processes).
# Usage: tests/gpu/run-gpu-checks.sh [BRANCH]   (default: the loaded module's major version)
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
py=${PYTHON:-$(command -v python3)}
export ANSIBLE_CONFIG="$repo/ansible.cfg" ANSIBLE_LIBRARY="$repo/playbooks/library"
export ANSIBLE_ROLES_PATH="$repo/roles" ANSIBLE_CACHE_PLUGIN=memory ANSIBLE_STDOUT_CALLBACK=default
TFLAB_GPU_STATE_DIR=$(mktemp -d)
export TFLAB_GPU_STATE_DIR
trap 'rm -rf "$TFLAB_GPU_STATE_DIR"' EXIT

branch=${1:-}
if [ -z "$branch" ] && [ -r /sys/module/nvidia/version ]; then
  branch=$(cut -d. -f1 /sys/module/nvidia/version)
fi
echo "== host: $(uname -r); nvidia module: $(cat /sys/module/nvidia/version 2>/dev/null || echo 'not loaded'); branch checked: ${branch:-?}"
command -v nvidia-smi >/dev/null && nvidia-smi -L || echo "nvidia-smi not found"

echo "== nvidia_gpu_facts (read-only)"
ansible localhost -c local -e "ansible_python_interpreter=$py" -m nvidia_gpu_facts

echo "== nvidia_driver role: detect + verify only"
extra=()
[ -n "$branch" ] && extra=(-e "nvidia_driver_branch=$branch")
ansible-playbook -i localhost, -e "ansible_python_interpreter=$py" "${extra[@]}" tests/gpu/verify-local.yml
echo "== recorded state"
cat "$TFLAB_GPU_STATE_DIR/nvidia_driver.fact"
