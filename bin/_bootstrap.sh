# Sourced by bin/run and bin/test: make .venv match uv.lock, installing uv itself if needed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

UV="$(command -v uv || true)"
if [ -z "$UV" ]; then
  if [ ! -x .uv-tool/bin/uv ]; then
    echo "==> installing uv (the package manager) into .uv-tool/"
    python3 -m venv .uv-tool
    .uv-tool/bin/pip install --quiet 'uv>=0.5,<1'
  fi
  UV="$PWD/.uv-tool/bin/uv"
fi
echo "==> installing dependencies from uv.lock into .venv/"
"$UV" sync --frozen --quiet --python 3.11
export PATH="$PWD/.venv/bin:$PATH"
