#!/usr/bin/env bash
# Test bed only: develop/prove molecule/default/files/browser_check.py against a local stand-in of
# a lab: a workspace Jupyter (the real TF 2.9.3 test image, as UID 1500 "alice", base_url /alice/,
# notebook dir bind-mounted from the host) behind nginx with TLS from a throwaway CA, reached as
# https://lab.example/alice/ from a Debian 12 client with Chromium (tflab-testbed/browser-dev:1).
# Usage: tests/testbed/browser/dev.sh up nb7|nb6 ; dev.sh check [browser_check.py args...] ; dev.sh down
# Containers and networks are named tflab-browser-dev-*.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
work=${TFLAB_BROWSER_DEV_DIR:-/tmp/tflab-browser-dev/run}
net=tflab-browser-dev-net
outnet=tflab-browser-dev-outnet
alice_uid=1500

images() {
  docker image inspect tflab-testbed/browser-dev:1 >/dev/null 2>&1 \
    || docker build -q -t tflab-testbed/browser-dev:1 "$here" >/dev/null
  docker image inspect tflab-testbed/browser-dev-nginx:1 >/dev/null 2>&1 \
    || docker build -q -f "$here/Dockerfile.nginx" -t tflab-testbed/browser-dev-nginx:1 "$here" >/dev/null
}

pki() {
  mkdir -p "$work/pki"
  cd "$work/pki"
  [ -f ca.crt ] || openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=tflab browser-dev CA" \
    -keyout ca.key -out ca.crt -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
  [ -f lab.crt ] || {
    openssl req -newkey rsa:2048 -nodes -subj "/CN=lab.example" -keyout lab.key -out lab.csr 2>/dev/null
    printf 'subjectAltName=DNS:lab.example\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' > ext
    openssl x509 -req -in lab.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile ext -out lab.crt 2>/dev/null
  }
  # A second, unrelated CA: trusting it must not make lab.example's certificate valid.
  [ -f other-ca.crt ] || openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=unrelated CA" \
    -keyout other-ca.key -out other-ca.crt -addext basicConstraints=critical,CA:TRUE 2>/dev/null
  cd - >/dev/null
}

up() {
  flavour=${1:?nb7 or nb6}
  images; pki
  docker network inspect $net >/dev/null 2>&1 || docker network create $net >/dev/null
  docker network inspect $outnet >/dev/null 2>&1 || docker network create $outnet >/dev/null
  mkdir -p "$work/alice-home"; chown $alice_uid:$alice_uid "$work/alice-home"
  [ -f "$work/alice.token" ] || head -c 36 /dev/urandom | base64 | tr -d '/+=' | cut -c1-48 > "$work/alice.token"
  token=$(cat "$work/alice.token")
  if [ "$flavour" = nb6 ]; then
    image=tflab-testbed/tensorflow:2.9.3-jupyter-nb6; app=NotebookApp; auth="--NotebookApp.token=$token"
    dir="--NotebookApp.notebook_dir=/home/alice/work"
  else
    image=tflab-testbed/tensorflow:2.9.3-jupyter; app=ServerApp; auth="--IdentityProvider.token=$token"
    dir="--ServerApp.root_dir=/home/alice/work"
  fi
  docker rm -f tflab-browser-dev-jup >/dev/null 2>&1 || true
  docker run -d --name tflab-browser-dev-jup --network $net -u $alice_uid:$alice_uid -e HOME=/tmp \
    -v "$work/alice-home:/home/alice/work" "$image" \
    jupyter notebook --no-browser --ip=0.0.0.0 --port=8888 --$app.base_url=/alice/ "$auth" "$dir" \
    --$app.allow_remote_access=True >/dev/null
  cat > "$work/nginx.conf" <<'NGINX'
map $http_upgrade $connection_upgrade { default upgrade; '' close; }
server {
  listen 443 ssl;
  server_name lab.example;
  ssl_certificate /etc/nginx/tls/lab.crt;
  ssl_certificate_key /etc/nginx/tls/lab.key;
  location /alice/ {
    proxy_pass http://tflab-browser-dev-jup:8888;
    proxy_set_header Host $host;
    proxy_set_header X-Forwarded-Proto https;
    proxy_http_version 1.1;
    proxy_set_header Upgrade $http_upgrade;
    proxy_set_header Connection $connection_upgrade;
    proxy_read_timeout 1h;
  }
}
NGINX
  docker rm -f tflab-browser-dev-nginx >/dev/null 2>&1 || true
  docker run -d --name tflab-browser-dev-nginx --network $net --network-alias lab.example \
    -v "$work/nginx.conf:/etc/nginx/conf.d/lab.conf:ro" -v "$work/pki:/etc/nginx/tls:ro" \
    tflab-testbed/browser-dev-nginx:1 >/dev/null
  for _ in $(seq 60); do
    docker exec tflab-browser-dev-jup python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8888/alice/login')" \
      >/dev/null 2>&1 && { echo "up: $flavour at https://lab.example/alice/"; return 0; }
    sleep 1
  done
  docker logs --tail 20 tflab-browser-dev-jup; exit 1
}

# check [--outsider] ARGS...: run browser_check.py in a fresh client container (allowed client on
# the lab's network; --outsider: on another network, lab.example pinned to the proxy's address,
# which Docker's inter-network isolation drops, like the lab firewall does).
check() {
  netargs=(--network $net)
  if [ "${1:-}" = --outsider ]; then
    shift
    ip=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$net\").IPAddress}}" tflab-browser-dev-nginx)
    netargs=(--network $outnet --add-host "lab.example:$ip")
  fi
  mkdir -p "$work/artifacts"
  docker run --rm --name tflab-browser-dev-client "${netargs[@]}" --shm-size 256m \
    -v "$repo/molecule/default/files/browser_check.py:/usr/local/bin/browser_check.py:ro" \
    -v "$work/pki/ca.crt:/root/lab-ca.crt:ro" -v "$work/pki/other-ca.crt:/root/other-ca.crt:ro" \
    -v "$work/alice.token:/root/alice.token:ro" -v "$work/artifacts:/artifacts" \
    tflab-testbed/browser-dev:1 python3 /usr/local/bin/browser_check.py "$@"
}

down() {
  docker rm -f tflab-browser-dev-client tflab-browser-dev-nginx tflab-browser-dev-jup >/dev/null 2>&1 || true
  docker network rm $net $outnet >/dev/null 2>&1 || true
}

"$@"
