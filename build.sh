#!/usr/bin/env bash
# One entry point for a fresh Debian machine: installs the Debian packages the build needs,
# configures and builds what the command needs, then runs it.
#   bash build.sh run [flopwise compare options]   the main job (Ling-Plus on devices A-E)
#   bash build.sh test                              the GoogleTest suite under ctest
#   bash build.sh bench                             planner, simulation and CPU training speed
#   bash build.sh build                             packages and build only
set -euo pipefail
cd "$(dirname "$0")"

PACKAGES=(cmake g++ make pkg-config ccache libgtest-dev libyaml-cpp-dev nlohmann-json3-dev libcli11-dev
          libboost-graph-dev libsimgrid-dev libtorch-dev libgloo-dev qt6-base-dev qt6-charts-dev qt6-svg-dev
          libqt6opengl6-dev libgl-dev libeigen3-dev python3-torch shellcheck)

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

# Builds the given targets only (LibTorch translation units are slow: `run` does not need them).
build() {
  install_packages
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
  if [ $# -gt 0 ]; then
    cmake --build build -j"$(nproc)" --target "$@"
  else
    cmake --build build -j"$(nproc)"
  fi
}

command="${1:-}"
shift || true
case "$command" in
  run)
    build flopwise
    build/bin/flopwise compare --out ling-plus-plan.json "$@"
    ;;
  test)
    build
    ctest --test-dir build --output-on-failure -j"$(nproc)"
    ;;
  bench)
    build flopwise flopwise-train
    build/bin/flopwise bench --simulation "$@"
    build/bin/flopwise plan --model ling-lite --profile device-C --devices 64 --objective cost --out build/bench-plan.json >/dev/null
    build/bin/flopwise train build/bench-plan.json --steps 12
    ;;
  build)
    build
    ;;
  *)
    echo "usage: bash build.sh run|test|bench|build" >&2
    exit 2
    ;;
esac
