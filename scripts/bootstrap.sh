#!/usr/bin/env bash
# Makes a fresh clone runnable: Debian packages, npm dependencies, compiled output.
# Idempotent and quiet when everything is already in place; used by `npm test`, `npm run demo`
# and .ci/run. Set PROVLINE_SKIP_APT=1 to skip the system-package step.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'bootstrap: %s\n' "$*" >&2; }

# --- 1. Debian packages ------------------------------------------------------------------
# command or file that proves the package is installed -> package name
declare -A NEED=(
  [redis-server]=redis-server
  [softhsm2-util]=softhsm2
  [/usr/lib/softhsm/libsofthsm2.so]=libsofthsm2
  [pkcs11-tool]=opensc
  [socat]=socat
  [ser2net]=ser2net
  [/usr/bin/aws]=awscli
  [openssl]=openssl
  [/usr/include/p11-kit-1/p11-kit/pkcs11.h]=libp11-kit-dev
  [gcc]=gcc
  [mosquitto_pub]=mosquitto-clients
)
missing=()
for probe in "${!NEED[@]}"; do
  if [[ "$probe" == /* ]]; then [[ -e "$probe" ]] || missing+=("${NEED[$probe]}")
  else command -v "$probe" >/dev/null 2>&1 || missing+=("${NEED[$probe]}"); fi
done
if ((${#missing[@]})) && [[ "${PROVLINE_SKIP_APT:-}" != 1 ]]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  log "installing Debian packages: ${missing[*]}"
  if [[ $(id -u) -eq 0 ]]; then SUDO=()
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO=(sudo -n)
  else
    log "missing system packages and no root or passwordless sudo. Install them with:"
    log "  sudo apt-get install -y ${missing[*]}"
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -qq >/dev/null
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- 2. npm dependencies ----------------------------------------------------------------
# pkcs11js is compiled from source; point node-gyp at the system Node headers so it never
# tries to download them (there is no route to nodejs.org here).
export npm_config_nodedir="${npm_config_nodedir:-/usr}"
stamp=node_modules/.package-lock.json
if [[ ! -f "$stamp" || package-lock.json -nt "$stamp" || ! -f node_modules/pkcs11js/build/Release/pkcs11.node ]]; then
  log "installing npm dependencies (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error >&2
fi

# --- 3. build ---------------------------------------------------------------------------
build_stamp=dist/.build-stamp
if [[ ! -f "$build_stamp" ]] || [[ -n "$(find src workers emulator devices bench config tsconfig.json tsconfig.build.json package.json -newer "$build_stamp" \( -name '*.ts' -o -name '*.json' -o -name '*.c' \) -print -quit 2>/dev/null)" ]]; then
  log "compiling TypeScript"
  rm -rf dist
  npx tsc -p tsconfig.build.json
  touch "$build_stamp"
fi
