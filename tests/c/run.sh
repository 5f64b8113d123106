#!/usr/bin/env bash
# Builds and runs the C unit tests of csrc/core under AddressSanitizer and
# UndefinedBehaviorSanitizer (a second or two). Usage: tests/c/run.sh [CC]
set -euo pipefail
cd "$(dirname "$0")/../.."
cc=${1:-${CC:-gcc}}
out=build/ctest
mkdir -p "$out"
"$cc" -std=c11 -Wall -Wextra -Wshadow -Werror -g -O1 -D_GNU_SOURCE \
    -fsanitize=address,undefined -fno-sanitize-recover=undefined \
    -fno-omit-frame-pointer -Icsrc/core \
    csrc/core/*.c tests/c/test_core.c -lm -o "$out/test_core"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    "$out/test_core"
