#!/usr/bin/env sh
# A training job that pushes its model with the plain oras CLI: no modelreg
# binary needed. modelreg inspect/list/pull read the result like a modelreg push.
#
#   REF=registry.example.com/team/fraud:1.4.0 ./oras-push.sh ./model-output
set -eu
: "${REF:?set REF=REGISTRY/REPOSITORY:VERSION}"
cd "${1:-.}"

oras push "$REF" \
  --artifact-type application/vnd.cncf.model.manifest.v1+json \
  --annotation "org.opencontainers.image.created=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  --annotation io.modelreg.framework=pytorch \
  --annotation "io.modelreg.metric.accuracy=${ACCURACY:-0.93}" \
  --annotation io.modelreg.param.lr=3e-4 \
  --annotation io.modelreg.dataset.0=s3://data/train.parquet \
  model.safetensors:application/vnd.cncf.model.weight.v1.raw \
  config.json:application/vnd.cncf.model.weight.config.v1.raw \
  README.md:application/vnd.cncf.model.doc.v1.raw
