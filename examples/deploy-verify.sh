#!/usr/bin/env sh
# A deploy step that trusts nothing but cosign: pin the digest production
# points at, check that enough approvers signed that digest with the cosign
# CLI alone, then pull exactly that digest (oras verifies every blob).
# No modelreg binary is needed on the deploy host.
#
#   REPO=registry.example.com/team/fraud KEYS="alice.pub bob.pub carol.pub" \
#   THRESHOLD=2 ./deploy-verify.sh /srv/models/fraud
#
# STAGE defaults to production; ORAS_FLAGS=--plain-http for an HTTP registry.
#
# cosign v2 and v3 both work. cosign v2 (2.6) refuses offline any digest
# that carries a sigstore bundle (modelreg sign's default form), even with
# a legacy signature beside it ("trusted root is required when using new
# bundle format"); given an empty trusted root (no transparency log, no CA:
# the key is the trust, as with --insecure-ignore-tlog) it verifies the
# bundle. So each key is tried as is, then with that root.
set -eu
: "${REPO:?set REPO=REGISTRY/REPOSITORY}"
: "${KEYS:?set KEYS to the approvers public key files}"
STAGE=${STAGE:-production}
THRESHOLD=${THRESHOLD:-1}
target=${1:?usage: deploy-verify.sh TARGET_DIR}
ROOT=${ROOT:-$(dirname "$0")/cosign-offline-trusted-root.json}

# Resolve once: everything below uses the digest, so a stage moving during the
# deploy cannot swap the model between verification and download.
digest=$(oras resolve ${ORAS_FLAGS:-} "$REPO:$STAGE")
echo "$REPO:$STAGE is $digest"

ok=0
for k in $KEYS; do
  if cosign verify --key "$k" --insecure-ignore-tlog=true "$REPO@$digest" >/dev/null 2>&1 ||
     cosign verify --key "$k" --insecure-ignore-tlog=true --new-bundle-format --trusted-root "$ROOT" "$REPO@$digest" >/dev/null 2>&1; then
    ok=$((ok + 1)); echo "signed by $k"
  else
    echo "not signed by $k"
  fi
done
if [ "$ok" -lt "$THRESHOLD" ]; then
  echo "only $ok of $THRESHOLD required signatures: refusing to deploy $REPO@$digest" >&2
  exit 1
fi

oras pull ${ORAS_FLAGS:-} "$REPO@$digest" -o "$target"
echo "deployed $REPO@$digest to $target"
