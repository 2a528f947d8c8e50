#!/usr/bin/env bash
# Installs mq-hotplug as a command, as any npm CLI: packs this checkout (npm pack builds it first)
# and installs the tarball globally, into PREFIX (default: npm's global prefix, /usr/local as root),
# then the bash completion where bash-completion looks for it (COMPLETIONS_DIR).
#   npm run install-cli                        # /usr/local/bin/mq-hotplug
#   PREFIX=$HOME/.local npm run install-cli    # ~/.local/bin/mq-hotplug
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${PREFIX:-$(npm prefix -g)}
completions=${COMPLETIONS_DIR:-$(pkg-config --variable=completionsdir bash-completion 2>/dev/null || echo /usr/share/bash-completion/completions)}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
tarball=$(npm pack --silent --pack-destination "$out" | tail -n 1)
npm install --global --prefix "$prefix" --no-audit --no-fund --silent "$out/$tarball"
mkdir -p "$completions"
"$prefix/bin/mq-hotplug" completion bash > "$completions/mq-hotplug"
echo "installed $prefix/bin/mq-hotplug $("$prefix/bin/mq-hotplug" --version); bash completion: $completions/mq-hotplug"
