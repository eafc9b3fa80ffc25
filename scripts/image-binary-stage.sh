#!/bin/sh
# Reproduces deploy/Dockerfile's build stage where no image builder can run (no container
# daemon, or no registry to pull the base images from), and checks the binary against the
# runtime stage:
#   1. the committed tree (what `COPY . .` takes, without untracked files) in a scratch dir;
#   2. the build stage's own cargo command, read from the Dockerfile;
#   3. every shared library the binary links comes from a package the runtime stage installs
#      (or from debian:bookworm-slim's base: libc6, libgcc-s1);
#   4. the binary runs as the image's user (uid 10001): --version, and `node --check` of the
#      example config.
# Usage: scripts/image-binary-stage.sh  (CARGO_TARGET_DIR: where to build; a warm release
# target saves most of the ~25 min a cold release build takes on 2 cores.)
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
dockerfile="$repo/deploy/Dockerfile"
target=${CARGO_TARGET_DIR:-$HOME/.cache/tessera/image-target}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

git -C "$repo" archive HEAD | tar -x -C "$work"
build=$(grep -o 'cargo build [^\\&]*' "$dockerfile" | head -n 1 | sed 's/ *$//')
[ -n "$build" ] || { echo "no cargo build command in $dockerfile" >&2; exit 1; }
echo "build stage: $build"
started=$(date +%s)
(cd "$work" && CARGO_TARGET_DIR="$target" $build)
echo "built in $(( $(date +%s) - started )) s"
bin="$target/release/tessera"
ls -l "$bin"

runtime_packages=$(sed -n '/AS runtime/,$p' "$dockerfile" | grep -o 'install -y --no-install-recommends [^&]*' | cut -d' ' -f4-)
base_packages="libc6 libgcc-s1"
missing=""
for lib in $(ldd "$bin" | awk '/=>/ {print $3}'); do
    package=$(dpkg -S "$(readlink -f "$lib")" 2>/dev/null | head -n 1 | cut -d: -f1)
    [ -n "$package" ] || package=$(dpkg -S "$lib" | head -n 1 | cut -d: -f1)
    case " $runtime_packages $base_packages " in
        *" $package "*) echo "  $lib: $package (in the runtime stage)" ;;
        *) missing="$missing $lib($package)" ;;
    esac
done
[ -z "$missing" ] || { echo "the runtime stage lacks:$missing" >&2; exit 1; }

as_image_user() {
    if [ "$(id -u)" = 0 ]; then setpriv --reuid 10001 --regid 10001 --clear-groups "$@"; else "$@"; fi
}
chmod o+rx "$work" "$work/deploy"
cp "$bin" "$work/tessera"
chmod 0755 "$work/tessera"
as_image_user "$work/tessera" --version
as_image_user "$work/tessera" node --config "$work/deploy/tessera.example.toml" --check
echo "the binary stage reproduces, and its binary runs as uid 10001 with the runtime stage's libraries"
