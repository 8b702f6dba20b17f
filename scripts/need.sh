#!/usr/bin/env bash
# Makes sure the system tools the project's targets use are on this machine: for each
# missing one, its Debian package is installed with apt-get when running as root (as CI and
# a fresh cloud machine do), otherwise the exact command to run is printed and the script
# fails. Usage: scripts/need.sh TOOL... (TOOL: a command name, or `font` for the TrueType
# font corpus-tools' plots draw with). Prints nothing when everything is there.
set -euo pipefail

# The Debian package that brings each tool.
package_of() {
  case "$1" in
    python3) echo python3 ;;
    pip) echo python3-pip ;;
    cmake) echo cmake ;;
    g++) echo g++ ;;
    make) echo make ;;
    npm) echo npm ;;
    pgrep) echo procps ;;
    sha256sum) echo coreutils ;;
    font) echo fonts-dejavu-core ;;
    *) echo "scripts/need.sh: no package known for '$1'" >&2; exit 2 ;;
  esac
}

present() {
  case "$1" in
    pip) python3 -m pip --version >/dev/null 2>&1 ;;
    font) [ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] ;;
    *) command -v "$1" >/dev/null ;;
  esac
}

missing=()
for tool in "$@"; do
  present "$tool" || missing+=("$(package_of "$tool")")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "installing ${missing[*]} (apt-get) ..." >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
else
  echo "error: this target needs ${missing[*]}; install them with:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
