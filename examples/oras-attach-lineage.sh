#!/usr/bin/env sh
# A training job without modelreg records the lineage of the version it just
# pushed with plain `oras attach`: an in-toto Statement with modelreg's
# lineage predicate (docs/lineage.md), attached as a referrer.
#
#   REF=registry.example.com/team/fraud:1.4.0 ./oras-attach-lineage.sh
set -eu
: "${REF:?set REF=REGISTRY/REPOSITORY:VERSION}"
repo=${REF%:*}
digest=$(oras resolve ${ORAS_FLAGS:-} "$REF")

cat > lineage.json <<JSON
{
  "_type": "https://in-toto.io/Statement/v1",
  "subject": [{"name": "$repo", "digest": {"sha256": "${digest#sha256:}"}}],
  "predicateType": "https://modelreg.dev/lineage/v1",
  "predicate": {
    "inputs": [
      {"kind": "dataset", "uri": "${DATASET_URI:-s3://data/train.parquet}"},
      {"kind": "code", "uri": "${CODE_REPO:-https://github.com/acme/train}", "revision": "${CODE_COMMIT:-4f2a9c1}"}
    ],
    "run": {"url": "${RUN_URL:-https://ci.example.com/runs/812}"}
  }
}
JSON

oras attach ${ORAS_FLAGS:-} "$repo@$digest" \
  --artifact-type application/vnd.modelreg.lineage.v1+json \
  lineage.json:application/vnd.in-toto+json
