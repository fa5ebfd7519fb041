#!/usr/bin/env bash
# gobuild.sh NAME MODULE CACHE LINKDIR [PKG]
#
# Builds the Go command PKG (default: the wrapper module's own main, ".")
# of the wrapper module tools/NAME into CACHE/NAME-VERSION/NAME, and links
# LINKDIR/NAME to it. The wrapper is a small module of its own whose go.mod
# pins MODULE at the version to build (and any replace directives the
# command needs), so weft's own go.mod never pulls it in; VERSION is the one
# tools/NAME/go.mod requires of MODULE. If tools/NAME/ldflags exists, its
# words are added to -ldflags, with ${VERSION} replaced (version stamps
# such as kube-apiserver's -X k8s.io/component-base/version.gitVersion).
# A binary already in the cache is only linked: the cache lives outside the
# clone, so a reused machine (CI's too) builds each version once.
# Everything comes from the Go module proxy, as for any other module.
set -euo pipefail
if [ $# -lt 4 ] || [ $# -gt 5 ]; then echo "usage: $0 NAME MODULE CACHE LINKDIR [PKG]" >&2; exit 2; fi
name=$1 module=$2 cache=$3 linkdir=$4 pkg=${5:-.}
here=$(cd "$(dirname "$0")" && pwd)
src=$here/$name
[ -f "$src/go.mod" ] || { echo "gobuild: no wrapper module $src/go.mod" >&2; exit 1; }
go=${GO:-go}
version=$($go -C "$src" list -m -f '{{.Version}}' "$module") \
  || { echo "gobuild: $src/go.mod does not require $module" >&2; exit 1; }
out=$cache/$name-$version
bin=$out/$name
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
  CGO_ENABLED=0 $go -C "$src" build -trimpath -ldflags "$ldflags" -o "$tmp" "$pkg"
  chmod 0755 "$tmp"
  mv -f "$tmp" "$bin"
  trap - EXIT
  echo "gobuild: built $bin in $(( $(date +%s) - start )) s"
fi
mkdir -p "$linkdir"
ln -sfn "$bin" "$linkdir/$name"
