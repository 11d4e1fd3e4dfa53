#!/bin/sh
# build/image.sh BINARY OUTDIR [IMAGE]: the OCI image of `modelreg serve`,
# built without a Docker engine (`make image` runs it with a static build).
#
# The image is BINARY (a static linux build of ./cmd/modelreg), the host's CA
# bundle (for S3 over HTTPS), a passwd entry for the non-root user 65532 and
# a /data directory it owns, on an empty base, with the entrypoint
# `modelreg serve`. crane builds it: `crane append` puts the layers on an
# empty OCI base and `crane mutate` writes the config. Both talk to a
# registry, so the script starts BINARY itself as a private registry on a
# loopback port for the build (no Docker, no daemon, nothing left running),
# then writes OUTDIR/oci (an OCI image layout), OUTDIR/modelreg.tar (a
# tarball for `docker load`/`podman load`), OUTDIR/digest, and, with IMAGE,
# pushes it there (crane's credentials: `crane auth login`).
set -eu

BIN=$1
OUT=$2
IMAGE=${3:-}
CRANE=${CRANE:-crane}
VERSION=${VERSION:-dev}
# The image's architecture (BINARY's), and the binary that runs the build
# registry on this machine (BINARY itself unless it is for another one).
ARCH=${GOARCH:-$(go env GOARCH)}
REGISTRY_BIN=${REGISTRY_BIN:-$BIN}

test -x "$BIN" || { echo "image: $BIN is not an executable; build it with CGO_ENABLED=0 go build -o $BIN ./cmd/modelreg" >&2; exit 1; }
command -v "$CRANE" >/dev/null || { echo "image: crane not found ($CRANE); make installs the pinned one" >&2; exit 1; }
case "$(file -b "$BIN" 2>/dev/null || echo static)" in
*dynamically*) echo "image: $BIN is dynamically linked; build it with CGO_ENABLED=0 (the image has no libc)" >&2; exit 1 ;;
esac

work=$(mktemp -d)
pid=
cleanup() {
	if [ -n "$pid" ]; then kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; fi
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

# Layer 1, owned by root: the binary, CA certificates, users.
root=$work/root
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs"
cp "$BIN" "$root/usr/local/bin/modelreg"
chmod 0755 "$root/usr/local/bin/modelreg"
for ca in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt /etc/ssl/cert.pem; do
	if [ -f "$ca" ]; then cp "$ca" "$root/etc/ssl/certs/ca-certificates.crt"; break; fi
done
test -f "$root/etc/ssl/certs/ca-certificates.crt" || { echo "image: no CA bundle on this machine (install ca-certificates): S3 over HTTPS needs one" >&2; exit 1; }
printf 'root:x:0:0:root:/root:/sbin/nologin\nmodelreg:x:65532:65532:modelreg:/data:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nmodelreg:x:65532:\n' >"$root/etc/group"
chmod 0644 "$root/etc/passwd" "$root/etc/group" "$root/etc/ssl/certs/ca-certificates.crt"
# Layer 2, owned by the user: its data directory and /tmp.
state=$work/state
mkdir -p "$state/data" "$state/tmp"
chmod 0750 "$state/data"
chmod 1777 "$state/tmp"
tarflags="--sort=name --mtime=@0 --numeric-owner --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime"
# shellcheck disable=SC2086
tar $tarflags --owner=0 --group=0 -C "$root" -cf "$work/root.tar" usr etc
# shellcheck disable=SC2086
tar $tarflags --owner=65532 --group=65532 -C "$state" -cf "$work/state.tar" data tmp

# The private registry the build goes through.
"$REGISTRY_BIN" serve --addr 127.0.0.1:0 --data "$work/registry" --log-format json 2>"$work/serve.log" &
pid=$!
addr=
for _ in $(seq 1 100); do
	addr=$(sed -n 's/.*"msg":"registry listening".*"addr":"\([^"]*\)".*/\1/p' "$work/serve.log" | head -n 1)
	[ -n "$addr" ] && break
	kill -0 "$pid" 2>/dev/null || { cat "$work/serve.log" >&2; echo "image: the build registry did not start" >&2; exit 1; }
	sleep 0.1
done
test -n "$addr" || { cat "$work/serve.log" >&2; echo "image: the build registry did not start" >&2; exit 1; }

ref=$addr/build/modelreg:$VERSION
"$CRANE" append --oci-empty-base -f "$work/root.tar" -f "$work/state.tar" -t "$ref.layers" >/dev/null
"$CRANE" mutate "$ref.layers" -t "$ref" \
	--set-platform linux/"$ARCH" \
	--entrypoint /usr/local/bin/modelreg,serve \
	--cmd=--addr,:5000,--data,/data \
	--user 65532:65532 \
	--workdir /data \
	--exposed-ports 5000/tcp \
	-e HOME=/data \
	-l org.opencontainers.image.title=modelreg \
	-l org.opencontainers.image.version="$VERSION" \
	-l org.opencontainers.image.source=https://github.com/modelreg/modelreg \
	-a org.opencontainers.image.title=modelreg \
	-a org.opencontainers.image.version="$VERSION" >/dev/null

rm -rf "$OUT/oci" "$OUT/modelreg.tar"
mkdir -p "$OUT"
"$CRANE" pull --format oci "$ref" "$OUT/oci"
"$CRANE" pull "$ref" "$OUT/modelreg.tar"
"$CRANE" digest "$ref" >"$OUT/digest"
if [ -n "$IMAGE" ]; then
	"$CRANE" copy "$ref" "$IMAGE"
	echo "pushed $IMAGE@$(cat "$OUT/digest")"
fi
echo "image $(cat "$OUT/digest"): $OUT/oci (OCI layout), $OUT/modelreg.tar"
