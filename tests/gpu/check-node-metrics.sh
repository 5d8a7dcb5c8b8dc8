#!/usr/bin/env bash
# GPU proof for issue 14: run tflab-node-metrics (roles/node_metrics/files/tflab_node_metrics.py)
# against the real driver and nvidia-smi of this machine, and check its GPU series against
# nvidia-smi's own answers. With a Docker engine that can give a container a GPU (`--gpus`, the
# NVIDIA Container Toolkit), a container labelled like a tflab workspace gets GPU 0 and the
# GPU-to-workspace mapping is checked too. Read-only apart from that container (removed at the end).
# Usage: tests/gpu/check-node-metrics.sh     (as root, so docker and every cgroup can be read)
#        TFLAB_GPU_CHECK_DOCKER=no skips the container part.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
container=tflab-gpucheck
cleanup() { docker rm -f "$container" >/dev/null 2>&1 || true; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

command -v nvidia-smi >/dev/null || fail "nvidia-smi not found: this check needs a GPU machine"
echo "== driver: $(cat /sys/module/nvidia/version 2>/dev/null || echo 'module not loaded')"
nvidia-smi -L

with_docker=no
if [ "${TFLAB_GPU_CHECK_DOCKER:-yes}" = yes ] && command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  image=$(docker images --format '{{.Repository}}:{{.Tag}}' | head -n 1)
  if [ -n "$image" ] && docker run -d --name "$container" --gpus device=0 \
      --label io.tflab.managed-by=tflab-provision --label io.tflab.workspace=gpucheck \
      --label io.tflab.owner=gpucheck --label io.tflab.owner-uid=4242 \
      --entrypoint sleep "$image" 600 >/dev/null 2>&1; then
    with_docker=yes
  else
    docker rm -f "$container" >/dev/null 2>&1 || true
    echo "== no container with a GPU could be started (no image or no NVIDIA runtime): mapping not checked"
  fi
fi

cat > "$tmp/config.json" <<JSON
{"textfile_dir": "$tmp", "state_dir": "$tmp", "firewall_script": "/nonexistent", "path": "$PATH"}
JSON
python3 "$repo/roles/node_metrics/files/tflab_node_metrics.py" --config "$tmp/config.json" --output - > "$tmp/out.prom"
echo "== the collector's GPU and driver series"
grep -E '^tflab_(gpu_|workspace_gpu_|node_driver|collector_errors\{source="gpu"\})' "$tmp/out.prom"

grep -qx 'tflab_collector_errors{source="gpu"} 0' "$tmp/out.prom" || fail "the gpu source reported an error"
expected=$(nvidia-smi -L | grep -c '^GPU ')
got=$(grep -c '^tflab_gpu_info{' "$tmp/out.prom" || true)
[ "$expected" = "$got" ] || fail "nvidia-smi lists $expected GPUs, the collector $got"
while IFS=', ' read -r index uuid total; do
  grep -q "^tflab_gpu_info{gpu=\"$index\",uuid=\"$uuid\"," "$tmp/out.prom" || fail "GPU $index $uuid missing"
  bytes=$((total * 1024 * 1024))
  grep -q "^tflab_gpu_memory_total_bytes{gpu=\"$index\",uuid=\"$uuid\",.*} $bytes\$" "$tmp/out.prom" \
    || fail "GPU $index: memory.total $total MiB is not $bytes bytes in the output"
done < <(nvidia-smi --query-gpu=index,uuid,memory.total --format=csv,noheader,nounits)
loaded=$(cat /sys/module/nvidia/version 2>/dev/null || echo none)
grep -q "^tflab_node_driver_info{installed=\"[^\"]*\",loaded=\"$loaded\"} 1\$" "$tmp/out.prom" \
  || fail "the loaded driver $loaded is not in tflab_node_driver_info"

if [ "$with_docker" = yes ]; then
  uuid0=$(nvidia-smi --query-gpu=uuid --format=csv,noheader -i 0)
  grep -q "^tflab_workspace_gpu_info{workspace=\"gpucheck\",user=\"gpucheck\",gpu=\"0\",uuid=\"$uuid0\"} 1\$" \
    "$tmp/out.prom" || fail "the container holding GPU 0 is not mapped to it"
  grep -q "^tflab_gpu_info{gpu=\"0\",uuid=\"$uuid0\",name=\"[^\"]*\",workspace=\"gpucheck\"} 1\$" "$tmp/out.prom" \
    || fail "GPU 0 does not name its workspace"
  echo "== GPU-to-workspace mapping checked with a real container"
fi
echo "PASS"
