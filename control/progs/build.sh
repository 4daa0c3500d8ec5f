#!/bin/sh
# Rebuilds the XDP programs `sluice` bundles (X.c -> X.o) with the flags the committed
# objects were built with. The output does not depend on where the checkout
# lives: clang runs in this directory on relative file names, and the
# compilation directory and any absolute prefix are mapped to ".".
#
# A source may ask for extra flags in a line of its own:
#     // CFLAGS: -mcpu=v3
#
# Usage: build.sh [OUT_DIR]   (default: this directory)
set -eu

cd "$(dirname "$0")"
here=$(pwd -P)
out=${1:-$here}
mkdir -p "$out"
out=$(cd "$out" && pwd -P)
CLANG=${CLANG:-clang}

for src in *.c; do
	obj="$out/${src%.c}.o"
	extra=$(sed -n 's|^// CFLAGS: ||p' "$src")
	# shellcheck disable=SC2086 # $extra is a list of flags
	"$CLANG" -O2 -g -target bpf $extra \
		-I"/usr/include/$(uname -m)-linux-gnu" \
		-fdebug-prefix-map="$here"=. \
		-fdebug-compilation-dir=. \
		-Wall -Werror \
		-c "$src" -o "$obj"
done

# The compiler that made the objects: another clang makes other bytes.
if [ "$out" = "$here" ]; then
	"$CLANG" --version | head -n 1 > CLANG_VERSION
fi
