#!/usr/bin/env sh
# A deploy step: pull the model a stage points at into a fresh directory.
# Every blob is digest-verified; a failed pull leaves nothing at the target.
#
#   REPO=registry.example.com/team/fraud STAGE=production ./deploy-pull.sh /srv/model
set -eu
: "${REPO:?set REPO=REGISTRY/REPOSITORY}"
target="${1:?usage: deploy-pull.sh TARGET_DIR}"

digest=$(modelreg pull "$REPO:${STAGE:-production}" -o "$target.new" --output json | sed -n 's/.*"digest": "\(.*\)".*/\1/p')
echo "pulled $REPO@$digest"
# Swap the new model in; keep the previous one for a quick manual rollback.
if [ -d "$target" ]; then rm -rf "$target.prev" && mv "$target" "$target.prev"; fi
mv "$target.new" "$target"
