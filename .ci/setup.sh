#!/usr/bin/env bash
# Installs what Backchannel needs on a fresh Debian machine with Python 3.11, then nothing more on later runs.
#   bash .ci/setup.sh        the app: a virtualenv in .venv with the package installed
#   bash .ci/setup.sh test   plus test dependencies, redis-server and a Chromium for the end-to-end suite
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=""
apt_install() {
  [ -n "$apt_updated" ] || { as_root apt-get update -qq; apt_updated=1; }
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv 2>/dev/null || { apt_install python3-venv && "$python" -m venv .venv; }
fi

extras=""
if [ "${1:-}" = test ]; then
  extras="[test]"
  missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  # The end-to-end suite uses Debian's Chromium, or Playwright's own browser where one is installed.
  if [ ! -x /usr/bin/chromium ] && ! ls "${PLAYWRIGHT_BROWSERS_PATH:-$HOME/.cache/ms-playwright}"/chromium-* >/dev/null 2>&1; then
    missing+=(chromium)
  fi
  # The widget's build tools (esbuild, terser; pinned in widget/package-lock.json) for the test that rebuilds it.
  command -v npm >/dev/null || missing+=(nodejs npm)
  # Playwright records `--video` with ffmpeg (see the end of this script).
  command -v ffmpeg >/dev/null || missing+=(ffmpeg)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} from Debian" >&2
    apt_install "${missing[@]}"
  fi
  # Reinstall only when the lock file changed.
  npm_stamp="widget/node_modules/.installed-$(sha256sum widget/package-lock.json | cut -c1-16)"
  if [ ! -e "$npm_stamp" ]; then
    npm ci --prefix widget --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null
    touch "$npm_stamp"
  fi
fi

# Reinstall only when pyproject.toml changed.
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)${extras}"
if [ ! -e "$stamp" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extras}"
  touch "$stamp"
fi

if [ "${1:-}" = test ]; then
  # Playwright looks for its own ffmpeg build, which it cannot download here; Debian's records the same video.
  revision=$(.venv/bin/python -c 'import json, pathlib, playwright
browsers = pathlib.Path(playwright.__file__).parent / "driver/package/browsers.json"
print(next(b["revision"] for b in json.loads(browsers.read_text())["browsers"] if b["name"] == "ffmpeg"))')
  ffmpeg_dir="${PLAYWRIGHT_BROWSERS_PATH:-$HOME/.cache/ms-playwright}/ffmpeg-$revision"
  if [ ! -e "$ffmpeg_dir/ffmpeg-linux" ]; then
    mkdir -p "$ffmpeg_dir"
    ln -sf "$(command -v ffmpeg)" "$ffmpeg_dir/ffmpeg-linux"
  fi
fi
