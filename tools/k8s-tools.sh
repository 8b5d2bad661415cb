#!/usr/bin/env bash
# Installs the pinned Kubernetes tools tests/deploy runs (kustomize, kubeconform) into
# ${EXSF_CACHE_DIR:-~/.cache/exsf}/bin with the Go toolchain; skipped when already there.
# Prints the bin directory.
set -euo pipefail
KUSTOMIZE_VERSION=v5.8.2
KUBECONFORM_VERSION=v0.7.0
bin="${EXSF_CACHE_DIR:-$HOME/.cache/exsf}/bin"
mkdir -p "$bin"
install_tool() {  # name version module
  local stamp="$bin/.$1-$2"
  if [ -x "$bin/$1" ] && [ -e "$stamp" ]; then return; fi
  command -v go >/dev/null || { echo "k8s-tools: go is needed to build $1 $2" >&2; exit 1; }
  echo "k8s-tools: building $1 $2" >&2
  GOBIN="$bin" go install "$3@$2" >&2
  touch "$stamp"
}
install_tool kustomize "$KUSTOMIZE_VERSION" sigs.k8s.io/kustomize/kustomize/v5
install_tool kubeconform "$KUBECONFORM_VERSION" github.com/yannh/kubeconform/cmd/kubeconform
echo "$bin"
