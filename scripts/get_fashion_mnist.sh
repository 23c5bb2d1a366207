#!/usr/bin/env bash
# Provide the real Fashion-MNIST that the book and the tests read; instant when it is there.
#   1. as root with apt-get: Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist);
#   2. else torchvision's download into $DFPT_DATA_DIR (default data/), FashionMNIST/raw;
#   3. else one error naming both ways.
# Usage: scripts/get_fashion_mnist.sh PYTHON   (the venv's python, for step 2)
set -uo pipefail
python=${1:?usage: $0 PYTHON}
system=/usr/share/datasets/fashion-mnist
raw=${DFPT_DATA_DIR:-data}/FashionMNIST/raw
files="train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte"

in_system() { for f in $files; do [ -s "$system/$f.gz" ] || return 1; done; }
in_cache() { for f in $files; do [ -s "$raw/$f" ] || return 1; done; }

in_system || in_cache && exit 0

log=$(mktemp)
trap 'rm -f "$log"' EXIT
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "Fashion-MNIST: installing Debian's dataset-fashion-mnist (apt-get)"
  if { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      dataset-fashion-mnist; } >"$log" 2>&1 && in_system; then
    exit 0
  fi
  echo "Fashion-MNIST: apt-get did not provide it (last lines below); trying torchvision" >&2
  tail -n 5 "$log" >&2
fi

echo "Fashion-MNIST: downloading with torchvision into $raw"
if "$python" -c "
from dfpt_core.data import get_dataset
for train in (True, False):
    get_dataset('fashion_mnist', train=train, download=True)
" >"$log" 2>&1 && in_cache; then
  exit 0
fi
tail -n 5 "$log" >&2
cat >&2 <<MSG
error: Fashion-MNIST is not on this machine and neither way of getting it worked.
  - Debian/Ubuntu, as root:  apt-get install dataset-fashion-mnist   (-> $system)
  - anywhere with internet:  $python -c "from dfpt_core.data import get_dataset; \\
      get_dataset('fashion_mnist', download=True); get_dataset('fashion_mnist', train=False, download=True)"
                             (-> $raw; set DFPT_DATA_DIR to put it elsewhere)
Then run the command again.
MSG
exit 1
