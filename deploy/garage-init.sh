#!/bin/sh
# Runs beside the Garage node (network_mode service:garage): assigns the
# single-node layout, imports the example key and creates the bucket.
set -eu
g() { garage -c /etc/garage.toml "$@"; }
until g status >/dev/null 2>&1; do sleep 1; done
node=$(g status | awk '/^[0-9a-f]{16}/ {print $1; exit}')
if ! g layout show | grep -q "$node"; then
  g layout assign -z dc1 -c 10G "$node"
  g layout apply --version 1
fi
g key import --yes -n loopmind "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" 2>/dev/null || true
g bucket create "$LOOPMIND_STORE__BUCKET" 2>/dev/null || true
g bucket allow --read --write --owner "$LOOPMIND_STORE__BUCKET" --key loopmind
echo "garage ready: bucket $LOOPMIND_STORE__BUCKET"
