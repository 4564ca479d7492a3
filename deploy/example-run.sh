#!/bin/sh
# The compose example's coordinator: writes the demo song, uploads it to the
# bucket, then masters the example catalog (summary in masters/example/).
set -eu
loopmind demo --out /tmp/demo >/dev/null
curl -fsS --aws-sigv4 "aws:amz:${AWS_REGION}:s3" \
  --user "${AWS_ACCESS_KEY_ID}:${AWS_SECRET_ACCESS_KEY}" \
  -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" \
  -T /tmp/demo/demo-song.wav \
  "${LOOPMIND_STORE__ENDPOINT}/${LOOPMIND_STORE__BUCKET}/mixes/demo-song.wav"
exec loopmind coordinator --config /etc/loopmind/loopmind.toml \
  --catalog /etc/loopmind/example-catalog.json
