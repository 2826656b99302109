#!/usr/bin/env bash
# Create .venv and install every part of the project (editable), from the project's own files.
# Re-running is cheap: nothing is reinstalled unless a pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "Python 3.11 is required (found $("$PYTHON" --version))" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi

projects=(gen clients/python/fte-client libs stack)
for p in services/*/pyproject.toml; do
  [ -e "$p" ] && projects+=("$(dirname "$p")")
done

stamp=.venv/.fte-installed
want="$(cat pyproject.toml "${projects[@]/%//pyproject.toml}" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade "pip==25.3"
  args=()
  for p in "${projects[@]}"; do args+=(-e "$p"); done
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "${args[@]}" -e ".[dev]"
  echo "$want" > "$stamp"
fi

# The agent reader's training-corpus vectors (about a minute of CPU, once per corpus change).
FTE_AGENT_READER_CACHE_DIR="${FTE_AGENT_READER_CACHE_DIR:-.local/cache/reader}" .venv/bin/python -m fte_agent train >/dev/null

# grpcurl for the API docs' examples (built once with Go into a cache folder outside the clone).
if command -v go >/dev/null; then
  scripts/grpcurl.sh >/dev/null
else
  echo "make setup: Go is not installed, so grpcurl (the API docs' examples) is not built" >&2
fi

# The browser for the support-form test (Debian chromium, installed only when missing).
scripts/install-browser.sh

# The local trace backend (Jaeger v2, built once from the Go module proxy into ~/.cache/fte and
# reused by every clone): several minutes the first time, nothing afterwards.
.venv/bin/python scripts/jaeger.py >/dev/null
