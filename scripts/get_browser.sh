#!/usr/bin/env bash
# A Chromium for the review page's browser tests (Playwright drives it; Playwright's own browser
# download is not needed). Installs Debian's chromium where this user can, else says how to get
# one; the browser tests are skipped without it (CI sets CXR_REQUIRE_BROWSER=1 to fail instead).
set -uo pipefail
for name in "${CXR_CHROMIUM:-}" chromium chromium-browser google-chrome; do
  if [ -n "$name" ] && command -v "$name" >/dev/null 2>&1; then
    exit 0
  fi
done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's chromium for the browser tests (apt-get)"
  if apt-get install -y -q chromium >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }; then
    exit 0
  fi
  echo "apt-get could not install chromium: the review page's browser tests will be skipped"
else
  echo "no Chromium found: the review page's browser tests will be skipped" \
    "(sudo apt-get install chromium, or set CXR_CHROMIUM to a Chrome or Chromium)"
fi
