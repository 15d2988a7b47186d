# The wheels the image's venv is installed from: the pinned aarch64 wheels of python-aarch64.lock (downloaded
# once, checked against their sha256, cached), pyogg built into a wheel here (it is pure Python), and the appliance
# wheel built from this checkout (with the NPU bundles in it). Sourced; defines wheelhouse DIR.

AARCH64_PLATFORMS=(--platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux_2_26_aarch64
                   --platform manylinux_2_27_aarch64 --platform manylinux_2_28_aarch64 --python-version 3.11
                   --implementation cp)

wheelhouse() {  # wheelhouse DIR
  local out=$1
  local key; key=$(cache_key "$HERE/python-aarch64.lock" "$HERE/lib/wheelhouse.sh")
  local pinned=$CACHE/wheels-$key
  if [ ! -d "$pinned" ]; then
    step "downloading the pinned aarch64 wheels (not cached)"
    local tmp=$CACHE/incomplete-wheels
    rm -rf "$tmp" && mkdir -p "$tmp/sdist"
    grep -v -e '^pyogg==' "$HERE/python-aarch64.lock" >"$tmp/wheels.txt"
    grep -e '^pyogg==' "$HERE/python-aarch64.lock" >"$tmp/sdist.txt"
    python3 -m pip download -q --disable-pip-version-check --no-deps --require-hashes --only-binary=:all: \
      "${AARCH64_PLATFORMS[@]}" -r "$tmp/wheels.txt" -d "$tmp"
    python3 -m pip download -q --disable-pip-version-check --no-deps --require-hashes --no-binary=:all: \
      -r "$tmp/sdist.txt" -d "$tmp/sdist"
    python3 -m pip wheel -q --disable-pip-version-check --no-deps -w "$tmp" "$tmp"/sdist/*
    rm -rf "$tmp/sdist" "$tmp"/*.txt
    mv "$tmp" "$pinned"
  fi
  mkdir -p "$out"
  cp "$pinned"/*.whl "$out/"
  step "building the appliance wheel from this checkout"
  # From a copy of the checkout's files (tracked and new, not ignored ones), so the build leaves nothing behind.
  local src; src=$(mktemp -d)
  git -C "$REPO" ls-files -z --cached --others --exclude-standard | (cd "$REPO" && xargs -0 tar -cf - --no-recursion) |
    tar -C "$src" -xf -
  python3 -m pip wheel -q --disable-pip-version-check --no-deps -w "$out" "$src"
  rm -rf "$src"
}
