#!/usr/bin/env bash
# One entry point for a fresh Debian machine: installs the Debian packages the build needs,
# configures and builds what the command needs, then runs it.
#   bash build.sh run [flopwise compare options]   the main job (Ling-Plus on devices A-E)
#   bash build.sh test                              the GoogleTest suite under ctest
#   bash build.sh bench                             the planner's own speed
#   bash build.sh build                             packages and build only
set -euo pipefail
cd "$(dirname "$0")"

PACKAGES=(cmake g++ make pkg-config ccache libgtest-dev libyaml-cpp-dev nlohmann-json3-dev libcli11-dev
          libboost-graph-dev libsimgrid-dev libtorch-dev libgloo-dev)

install_packages() {
  local missing=()
  for package in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "build.sh: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

build() {
  install_packages
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build -j"$(nproc)"
}

command="${1:-}"
shift || true
case "$command" in
  run)
    build
    build/bin/flopwise compare --out ling-plus-plan.json "$@"
    ;;
  test)
    build
    ctest --test-dir build --output-on-failure -j"$(nproc)"
    ;;
  bench)
    build
    build/bin/flopwise bench "$@"
    ;;
  build)
    build
    ;;
  *)
    echo "usage: bash build.sh run|test|bench|build" >&2
    exit 2
    ;;
esac
