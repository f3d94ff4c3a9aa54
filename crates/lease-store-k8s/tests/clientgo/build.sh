#!/bin/sh
# Builds tests/clientgo/main.go (a client-go leader-election candidate) against client-go
# v1.20.2 from Debian's `kubernetes` source package, with Debian's Go 1.19, offline once the
# packages are downloaded: the same sources and toolchain `cargo xtask k8s install` builds
# kube-apiserver from (GOPATH mode, the tree's vendor/ folder, Debian's reflect2 1.0.2 in place
# of the vendored 1.0.1 that breaks under Go >= 1.18).
#
# The binary is cached as
#   ${LEASE_K8S_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/lease-xtask/k8s}/clientgo-v1.20.2/lease-rs-clientgo
# beside a copy of the main.go it was built from; it is rebuilt when main.go changes.
# Prints the binary's path on the last line. Needs apt-get with a deb-src entry (which
# `cargo xtask k8s install` adds); about 2 minutes on 2 cores.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
cache=${LEASE_K8S_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/lease-xtask/k8s}
out=$cache/clientgo-v1.20.2
bin=$out/lease-rs-clientgo

if [ -x "$bin" ] && cmp -s "$here/main.go" "$out/main.go"; then
    echo "$bin"
    exit 0
fi

mkdir -p "$out"
work=$(mktemp -d "$cache/clientgo-work-XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
echo "building the client-go candidate in $work" >&2
apt-get download -qq golang-1.19-go golang-1.19-src golang-github-modern-go-reflect2-dev >&2
apt-get source --download-only -qq kubernetes >&2
mkdir root
for deb in *.deb; do dpkg -x "$deb" root; done
tar xf kubernetes_*.orig.tar.*
src=$(ls -d kubernetes-1.* | head -n 1)

# Debian's reflect2 1.0.2 replaces the vendored 1.0.1.
packaged=root/usr/share/gocode/src/github.com/modern-go/reflect2
vendored=$src/vendor/github.com/modern-go/reflect2
for f in "$vendored"/*.go "$vendored"/*.s; do
    case $f in *_test.go) ;; *) rm -f "$f" ;; esac
done
for f in "$packaged"/*.go "$packaged"/*.s; do
    case $f in *_test.go) ;; *) [ -f "$f" ] && cp "$f" "$vendored"/ ;; esac
done

mkdir -p gopath/src/k8s.io "$src/cmd/lease-rs-clientgo"
ln -s "$work/$src" gopath/src/k8s.io/kubernetes
cp "$here/main.go" "$src/cmd/lease-rs-clientgo/main.go"
goroot=$work/root/usr/lib/go-1.19
cd gopath/src/k8s.io/kubernetes
PWD=$(pwd) GOROOT=$goroot GOPATH=$work/gopath GOCACHE=$work/gocache CGO_ENABLED=0 \
    GO111MODULE=off GOFLAGS= PATH=$goroot/bin:$PATH \
    "$goroot/bin/go" build -trimpath -o "$work/lease-rs-clientgo" k8s.io/kubernetes/cmd/lease-rs-clientgo >&2
mv "$work/lease-rs-clientgo" "$bin.tmp"
cp "$here/main.go" "$out/main.go"
mv "$bin.tmp" "$bin"
echo "$bin"
