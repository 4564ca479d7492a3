#!/usr/bin/env bash
# Starts a single-node Garage (S3-compatible store) on loopback for the tests,
# once per machine: throwaway data under $GARAGE_DIR, fixed test credentials,
# one bucket. Idempotent: if it already answers, only prints the settings.
# Prints the environment the tests (and loopmind) need, as KEY=VALUE lines.
set -euo pipefail
dir=${GARAGE_DIR:-/tmp/loopmind-garage}
key_id=GK0123456789abcdef01234567
secret=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
bucket=loopmind-test
region=garage
cfg=$dir/garage.toml
g() { garage -c "$cfg" "$@"; }

command -v garage >/dev/null || { echo "garage not on PATH (cargo install garage --locked)" >&2; exit 1; }
up() { curl -s -o /dev/null http://127.0.0.1:3900/ 2>/dev/null; }

if ! up; then
  rm -rf "$dir"
  mkdir -p "$dir/meta" "$dir/data"
  cat > "$cfg" <<TOML
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:3901"
rpc_public_addr = "127.0.0.1:3901"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"

[s3_api]
s3_region = "$region"
api_bind_addr = "127.0.0.1:3900"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:3903"
TOML
  nohup garage -c "$cfg" server >"$dir/server.log" 2>&1 &
  for _ in $(seq 1 100); do
    g status >/dev/null 2>&1 && break
    sleep 0.2
  done
  node=$(g status 2>/dev/null | awk '/^[0-9a-f]{16}/ {print $1; exit}')
  [ -n "$node" ] || { echo "garage did not start; see $dir/server.log" >&2; cat "$dir/server.log" >&2; exit 1; }
  g layout assign -z dc1 -c 1G "$node" >/dev/null
  g layout apply --version 1 >/dev/null
  g key import --yes -n loopmind-test "$key_id" "$secret" >/dev/null
  g bucket create "$bucket" >/dev/null
  g bucket allow --read --write --owner "$bucket" --key loopmind-test >/dev/null
  for _ in $(seq 1 50); do up && break; sleep 0.2; done
fi

echo "AWS_ACCESS_KEY_ID=$key_id"
echo "AWS_SECRET_ACCESS_KEY=$secret"
echo "AWS_REGION=$region"
echo "LOOPMIND_STORE__KIND=s3"
echo "LOOPMIND_STORE__BUCKET=$bucket"
echo "LOOPMIND_STORE__ENDPOINT=http://127.0.0.1:3900"
echo "LOOPMIND_STORE__REGION=$region"
echo "LOOPMIND_STORE__PATH_STYLE=true"
