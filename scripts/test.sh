#!/usr/bin/env bash
# Install what the tests need when it is missing, then run the test suite.
#   bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

export GRADIO_ANALYTICS_ENABLED=False
export PYTHONDONTWRITEBYTECODE=1

# Exact pins: when they are already satisfied this is a quick local check.
python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
# tinysoundfont renders the corpus; its only dependency (pyaudio) is for live playback and does not
# build here, so it is installed without dependencies.
python -c "import tinysoundfont" 2>/dev/null || python -m pip install -q --disable-pip-version-check --no-deps tinysoundfont==0.3.7

# Debian packages the browser tests need.
if [ ! -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null 2>&1; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
      || echo "warning: could not install chromium; browser tests will be skipped" >&2
  else
    echo "warning: /usr/bin/chromium missing and apt-get unavailable; browser tests will be skipped" >&2
  fi
fi

exec python -m pytest "$@"
