#!/usr/bin/env bash
# Dev harness for roles/https_front_door on a throwaway systemd host container (Debian 12):
# converge, idempotence, checks from the controller (allowed) and from an outsider container,
# a broken candidate refused by nginx -t, an admin certificate replacing the lab CA's and back.
# Usage: tests/testbed/front_door/run.sh [--keep]   (needs the tflab/bare-host:debian12 image)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
NET=tflab-fdtest-net HOST=tflab-fdtest-host OUTSIDER=tflab-fdtest-outsider IP=10.213.77.10 IP6=fd00:213:77::10
export FDTEST_WORK=${FDTEST_WORK:-/tmp/tflab-fdtest}
KEEP=${1:-}
cleanup() {
  [ "$KEEP" = --keep ] && return
  docker rm -f "$HOST" "$OUTSIDER" >/dev/null 2>&1 || true
  docker network rm "$NET" >/dev/null 2>&1 || true
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }

rm -rf "$FDTEST_WORK"; mkdir -p "$FDTEST_WORK"
docker rm -f "$HOST" "$OUTSIDER" >/dev/null 2>&1 || true
docker network rm "$NET" >/dev/null 2>&1 || true
docker network create --subnet 10.213.77.0/24 --gateway 10.213.77.1 \
  --ipv6 --subnet fd00:213:77::/64 --gateway fd00:213:77::1 "$NET" >/dev/null
CAPS=()
for c in AUDIT_CONTROL AUDIT_READ AUDIT_WRITE BLOCK_SUSPEND CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID \
  IPC_LOCK IPC_OWNER KILL LEASE LINUX_IMMUTABLE MAC_ADMIN MAC_OVERRIDE MKNOD NET_ADMIN NET_BIND_SERVICE \
  NET_BROADCAST NET_RAW SETFCAP SETGID SETPCAP SETUID SYS_ADMIN SYS_BOOT SYS_CHROOT SYS_MODULE SYS_NICE \
  SYS_PACCT SYS_PTRACE SYS_RAWIO SYS_TIME SYS_TTY_CONFIG SYSLOG WAKE_ALARM; do CAPS+=(--cap-add "$c"); done
docker run -d --name "$HOST" --hostname "$HOST" --network "$NET" --ip "$IP" --ip6 "$IP6" --cap-drop ALL "${CAPS[@]}" \
  --security-opt seccomp=unconfined --security-opt apparmor=unconfined --cgroupns host \
  -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run --tmpfs /run/lock --stop-signal SIGRTMIN+3 \
  tflab/bare-host:debian12 /lib/systemd/systemd >/dev/null
docker run -d --name "$OUTSIDER" --network "$NET" --ip 10.213.77.30 --ip6 fd00:213:77::30 tflab/bare-host:debian12 sleep infinity >/dev/null
for _ in $(seq 30); do
  state=$(docker exec "$HOST" systemctl is-system-running 2>/dev/null || true)
  case $state in running|degraded) break;; esac; sleep 1
done

cat >"$FDTEST_WORK/inventory.yml" <<INV
all:
  children:
    fdtest:
      hosts:
        $HOST:
          ansible_connection: community.docker.docker
INV
export ANSIBLE_CONFIG=$ROOT/ansible.cfg ANSIBLE_ROLES_PATH=$ROOT/roles ANSIBLE_CACHE_PLUGIN=memory
export ANSIBLE_STDOUT_CALLBACK=default
PB=("$ROOT/.venv/bin/ansible-playbook" -i "$FDTEST_WORK/inventory.yml" -e "https_front_door_ca_dir=$FDTEST_WORK/ca")
converge() { "${PB[@]}" "$HERE/converge.yml" "$@" | tee "$FDTEST_WORK/last.log"; }
changed() { grep -E "^$HOST +:" "$FDTEST_WORK/last.log" | sed -E 's/.*changed=([0-9]+).*/\1/'; }

"${PB[@]}" "$HERE/prepare.yml" >/dev/null
converge >/dev/null || { cat "$FDTEST_WORK/last.log"; fail "first converge"; }
ok "first converge (changed=$(changed))"
converge >/dev/null || fail "second converge"
[ "$(changed)" = 0 ] || { grep -B3 -E '^changed:' "$FDTEST_WORK/last.log"; fail "second run changed=$(changed)"; }
ok "idempotence: second run changed=0"
grep -q "fingerprint: $(openssl x509 -in "$FDTEST_WORK/ca/lab-ca.crt" -noout -fingerprint -sha256 | cut -d= -f2)" \
  "$FDTEST_WORK/last.log" || fail "https_front_door_ca_fingerprint differs from openssl's"
grep -q "alice: https://$HOST/alice/" "$FDTEST_WORK/last.log" || fail "https_front_door_urls"
ok "facts: CA fingerprint as openssl -fingerprint -sha256, urls {alice: https://$HOST/alice/}"
[ "$(stat -c %a "$FDTEST_WORK/ca")" = 700 ] && [ "$(stat -c %a "$FDTEST_WORK/ca/lab-ca.key")" = 600 ] || fail "CA modes"
[ "$(docker exec "$HOST" stat -c '%a %U' /etc/tflab/tls/frontdoor.key)" = "600 root" ] || fail "host key mode"
ok "modes: CA dir 0700, CA key 0600, host key root 0600"

# --- From the controller (10.213.77.1: allowed) ---------------------------------------------
CA=$FDTEST_WORK/ca/lab-ca.crt
C=(curl -sS --noproxy '*' --max-time 5 --resolve "$HOST:443:$IP" --resolve "$HOST:80:$IP")
body=$("${C[@]}" --cacert "$CA" "https://$HOST/alice/tree?x=1") || fail "curl with the lab CA"
python3 - "$body" <<'PY' || fail "upstream saw the wrong request: $body"
import json, sys
seen = json.loads(sys.argv[1]); h = {k.lower(): v for k, v in seen["headers"].items()}
assert seen["path"] == "/alice/tree?x=1", seen["path"]
assert h["x-forwarded-proto"] == "https" and h["x-real-ip"] == "10.213.77.1", h
assert h["x-forwarded-for"] == "10.213.77.1" and h["host"] == "tflab-fdtest-host", h
PY
ok "https://$HOST/alice/tree?x=1 verified with the lab CA; upstream got the path unchanged, Host, X-Real-IP, X-Forwarded-*"
"${C[@]}" -o /dev/null "https://$HOST/alice/" 2>/dev/null && fail "curl without the CA trusted the certificate"
"${C[@]}" -o /dev/null --cacert "$CA" "https://$IP/alice/" --connect-to "$IP:443:$IP:443" || fail "IP SAN"
ok "no CA: verification fails; by IP address: the IP SAN verifies"
hdrs=$("${C[@]}" --cacert "$CA" -D - -o /dev/null "https://$HOST/nothing")
grep -q "^HTTP/2 404" <<<"$hdrs" || fail "/nothing not 404: $hdrs"
grep -qi "^strict-transport-security: max-age=63072000" <<<"$hdrs" || fail "no HSTS"
grep -qi "^server: nginx.$" <<<"$hdrs" || fail "server_tokens: $(grep -i ^server <<<"$hdrs")"
[ "$("${C[@]}" --cacert "$CA" -o /dev/null -w '%{http_code}' "https://$HOST/")" = 404 ] || fail "/ not 404"
ok "/ and /nothing: 404 with HSTS, Server header without a version"
loc=$("${C[@]}" --cacert "$CA" -o /dev/null -w '%{http_code} %{redirect_url}' "https://$HOST/alice?a=b")
[ "$loc" = "301 https://$HOST/alice/?a=b" ] || fail "/alice redirect: $loc"
loc=$("${C[@]}" -o /dev/null -w '%{http_code} %{redirect_url}' "http://$HOST/alice/x?y=1")
[ "$loc" = "301 https://$HOST/alice/x?y=1" ] || fail "http redirect: $loc"
ok "/alice -> 301 /alice/?a=b; http:// -> 301 https:// with path and query"
ws=$("${C[@]}" --cacert "$CA" --http1.1 -i -N --max-time 3 -H 'Connection: Upgrade' -H 'Upgrade: websocket' \
  -H 'Sec-WebSocket-Version: 13' -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' \
  "https://$HOST/alice/api/kernels/k1/channels" 2>/dev/null || true)
grep -q "^HTTP/1.1 101" <<<"$ws" && grep -qi "^x-upstream-path: /alice/api/kernels/k1/channels" <<<"$ws" \
  || fail "websocket upgrade: $ws"
docker exec "$HOST" ss -ltn | grep -q '\[::\]:443 ' || fail "no IPv6 listener"
code=$(curl -sS --noproxy '*' --max-time 5 --cacert "$CA" --resolve "$HOST:443:[$IP6]" -o /dev/null -w '%{http_code}' \
  "https://$HOST/alice/") || fail "IPv6 curl"
[ "$code" = 200 ] || fail "IPv6 from fd00:213:77::1 got $code"
ok "IPv6: [::]:443 listens (host has IPv6); the controller (fd00:213:77::1, allowed) gets 200 over IPv6"
ok "websocket upgrade: 101 from the upstream at /alice/api/kernels/k1/channels"
for v in tls1 tls1_1; do
  out=$(openssl s_client -connect "$IP:443" -servername "$HOST" -"$v" -cipher 'DEFAULT:@SECLEVEL=0' </dev/null 2>&1) \
    && fail "$v accepted"
  grep -q "alert protocol version" <<<"$out" || fail "$v not refused by the server: $out"
done
openssl s_client -connect "$IP:443" -servername "$HOST" -tls1_2 -cipher 'DEFAULT:@SECLEVEL=0' </dev/null >/dev/null 2>&1 \
  || fail "TLS 1.2 refused"
openssl s_client -connect "$IP:443" -servername "$HOST" -tls1_3 </dev/null >/dev/null 2>&1 || fail "TLS 1.3 refused"
openssl s_client -connect "$IP:443" -servername "$HOST" -tls1_2 -cipher 'AES128-SHA:ECDHE-ECDSA-AES128-SHA:DHE-RSA-AES128-GCM-SHA256:@SECLEVEL=0' \
  </dev/null >/dev/null 2>&1 && fail "a non-ECDHE-AEAD cipher was accepted"
ok "TLS 1.0 and 1.1 refused by the server (alert protocol version); 1.2 and 1.3 accepted; CBC/DHE ciphers refused"

# --- From the outsider (10.213.77.30: not in allowed_cidrs) -------------------------------
docker cp "$CA" "$OUTSIDER:/tmp/ca.crt"
code=$(docker exec "$OUTSIDER" python3 -c '
import http.client, ssl
ctx = ssl.create_default_context(cafile="/tmp/ca.crt")
c = http.client.HTTPSConnection("10.213.77.10", 443, context=ctx, timeout=5)
c.request("GET", "/alice/"); print(c.getresponse().status)')
[ "$code" = 403 ] || fail "outsider got $code"
code=$(docker exec "$OUTSIDER" python3 -c '
import http.client, ssl
ctx = ssl.create_default_context(cafile="/tmp/ca.crt"); ctx.check_hostname = False
c = http.client.HTTPSConnection("fd00:213:77::10", 443, context=ctx, timeout=5)
c.request("GET", "/alice/"); print(c.getresponse().status)')
[ "$code" = 403 ] || fail "outsider over IPv6 got $code"
ok "outsider 10.213.77.30 (verified TLS by IP SAN): /alice/ -> 403; over IPv6 (fd00:213:77::30) -> 403 too"

# --- A broken candidate never goes live ------------------------------------------------------
before=$(docker exec "$HOST" sha256sum /etc/nginx/conf.d/tflab-front-door.conf)
converge -e '{"https_front_door_server_extra": ["no_such_directive on;"]}' >/dev/null && fail "broken file accepted"
grep -q 'unknown directive "no_such_directive"' "$FDTEST_WORK/last.log" || fail "not refused by nginx -t"
[ "$(docker exec "$HOST" sha256sum /etc/nginx/conf.d/tflab-front-door.conf)" = "$before" ] || fail "live file changed"
"${C[@]}" --cacert "$CA" -o /dev/null "https://$HOST/alice/" || fail "front door down after a refused file"
ok "broken candidate refused by nginx -t (unknown directive), live file unchanged, still serving"

# --- The admin's own certificate replaces the lab CA's, and back ------------------------------
"${PB[@]}" "$ROOT/tests/testbed/front_door/admin_cert.yml" >/dev/null || fail "admin cert"
ADMIN=(-e "@$FDTEST_WORK/admin/admin-cert.yml")
converge "${ADMIN[@]}" >/dev/null || { cat "$FDTEST_WORK/last.log"; fail "admin converge"; }
"${C[@]}" -o /dev/null --cacert "$FDTEST_WORK/admin/admin-ca.crt" "https://$HOST/alice/" || fail "admin CA does not verify"
"${C[@]}" -o /dev/null --cacert "$CA" "https://$HOST/alice/" 2>/dev/null && fail "lab CA still verifies"
grep -q "fingerprint: $(openssl x509 -in "$FDTEST_WORK/admin/admin-ca.crt" -noout -fingerprint -sha256 | cut -d= -f2)" \
  "$FDTEST_WORK/last.log" || fail "fingerprint is not the admin CA's"
converge "${ADMIN[@]}" >/dev/null || fail "admin converge 2"
[ "$(changed)" = 0 ] || fail "admin second run changed=$(changed)"
ok "admin certificate: served (admin CA verifies, lab CA no longer), fingerprint is the admin CA's, second run changed=0"
converge >/dev/null || fail "back to the lab CA"
"${C[@]}" -o /dev/null --cacert "$CA" "https://$HOST/alice/" || fail "lab CA not back"
converge >/dev/null; [ "$(changed)" = 0 ] || fail "lab second run changed=$(changed)"
ok "admin settings removed: the lab CA's certificate (new ECC key) is back, then changed=0"

# --- Renewal --------------------------------------------------------------------------------
serial() { docker exec "$HOST" openssl x509 -in /etc/tflab/tls/frontdoor.crt -noout -serial; }
s1=$(serial)
converge -e https_front_door_certificate_days=400 -e https_front_door_renew_days=399 >/dev/null || fail "renew"
s2=$(serial); [ "$s1" != "$s2" ] || fail "not re-issued inside the renewal window"
converge -e https_front_door_certificate_days=400 -e https_front_door_renew_days=399 >/dev/null
[ "$(changed)" = 0 ] && [ "$(serial)" = "$s2" ] || fail "re-issued again"
converge -e '{"https_front_door_extra_names": ["10.213.77.10", "fd.example.test"]}' >/dev/null
docker exec "$HOST" openssl x509 -in /etc/tflab/tls/frontdoor.crt -noout -ext subjectAltName | grep -q fd.example.test \
  || fail "new name not in the certificate"
ok "re-issued inside the renewal window, then kept; a new name re-issues"
echo "ALL FRONT DOOR CHECKS PASSED"
