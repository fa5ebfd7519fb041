#!/usr/bin/env bash
# gobuild.sh NAME MODULE CACHE LINKDIR [PKG [WRAPPER]]
#
# Builds the Go command PKG (default: the wrapper module's own main, ".")
# of the wrapper module tools/WRAPPER (default: tools/NAME) into
# CACHE/NAME-VERSION/NAME, and links LINKDIR/NAME to it. One wrapper can
# serve several commands of one module (tools/kube: kube-apiserver,
# kube-controller-manager, ...), each still in a cache directory of its
# own. The wrapper is a small module of its own whose go.mod pins MODULE at
# the version to build (and any replace directives the command needs), so
# weft's own go.mod never pulls it in; VERSION is the one the wrapper's
# go.mod requires of MODULE. If tools/WRAPPER/ldflags exists, its
# words are added to -ldflags, with ${VERSION} replaced (version stamps
# such as kube-apiserver's -X k8s.io/component-base/version.gitVersion).
# A NAME ending in .test is a test binary (Kubernetes' e2e.test): PKG is
# built with go test -c instead of go build.
# A binary already in the cache is only linked: the cache lives outside the
# clone, so a reused machine (CI's too) builds each version once.
# Everything comes from the Go module proxy, as for any other module.
set -euo pipefail
if [ $# -lt 4 ] || [ $# -gt 6 ]; then echo "usage: $0 NAME MODULE CACHE LINKDIR [PKG [WRAPPER]]" >&2; exit 2; fi
name=$1 module=$2 cache=$3 linkdir=$4 pkg=${5:-.} wrapper=${6:-$1}
here=$(cd "$(dirname "$0")" && pwd)
src=$here/$wrapper
[ -f "$src/go.mod" ] || { echo "gobuild: no wrapper module $src/go.mod" >&2; exit 1; }
go=${GO:-go}
version=$($go -C "$src" list -m -f '{{.Version}}' "$module") \
  || { echo "gobuild: $src/go.mod does not require $module" >&2; exit 1; }
out=$cache/$name-$version
bin=$out/$name
mkdir -p "$cache"
# Several clones (worktrees, CI jobs) may share the cache: one builds a
# version while the others wait on the lock, then find it built.
exec 9>"$cache/.$name-$version.lock"
flock 9
if [ ! -x "$bin" ]; then
  ldflags="-s -w"
  if [ -f "$src/ldflags" ]; then
    ldflags="$ldflags $(sed "s/\${VERSION}/$version/g" "$src/ldflags" | tr '\n' ' ')"
  fi
  mkdir -p "$out"
  echo "gobuild: building $name ($module@$version, $pkg) into $out (first time only)"
  start=$(date +%s)
  tmp=$(mktemp "$out/.$name.XXXXXX")
  trap 'rm -f "$tmp"' EXIT
  build=(build)
  case $name in *.test) build=(test -c) ;; esac
  CGO_ENABLED=0 $go -C "$src" "${build[@]}" -trimpath -ldflags "$ldflags" -o "$tmp" "$pkg"
  chmod 0755 "$tmp"
  mv -f "$tmp" "$bin"
  trap - EXIT
  echo "gobuild: built $bin in $(( $(date +%s) - start )) s"
fi
mkdir -p "$linkdir"
ln -sfn "$bin" "$linkdir/$name"
