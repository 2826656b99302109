#!/usr/bin/env bash
# Prints the path of grpcurl, built once with Go from its module into a cache folder outside the
# clone (FTE_TOOLS_CACHE, default ~/.cache/fte) and reused by every checkout. The API docs'
# examples and their test call it.
set -euo pipefail
VERSION=v1.9.4
CACHE="${FTE_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fte}"
DIR="$CACHE/grpcurl-$VERSION"
if [ ! -x "$DIR/grpcurl" ]; then
  if ! command -v go >/dev/null; then
    echo "grpcurl is built with Go, which this machine lacks" >&2
    exit 1
  fi
  mkdir -p "$DIR"
  GOBIN="$DIR" go install "github.com/fullstorydev/grpcurl/cmd/grpcurl@$VERSION" >&2
fi
echo "$DIR/grpcurl"
