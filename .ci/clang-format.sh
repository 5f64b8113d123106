#!/usr/bin/env bash
# The C style check: clang-format (with the checked-in .clang-format) over
# csrc/ and tests/c/. Installs clang-format from Debian when missing.
#   .ci/clang-format.sh           check (what CI runs): fails on any change
#   .ci/clang-format.sh --count   lines a reformat would change, per file
#   .ci/clang-format.sh --fix     reformat in place
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v clang-format >/dev/null; then
    { apt-get update -qq && apt-get install -y -qq clang-format; } >/dev/null
fi
mapfile -t files < <(git ls-files 'csrc/*.[ch]' 'tests/c/*.[ch]' 2>/dev/null \
    || find csrc tests/c -name '*.[ch]' | sort)
case "${1:-}" in
--fix)
    clang-format -i "${files[@]}"
    ;;
--count)
    total=0
    for f in "${files[@]}"; do
        n=$(clang-format "$f" | diff "$f" - | grep -c '^<' || true)
        total=$((total + n))
        [ "$n" = 0 ] || echo "$n $f"
    done
    echo "total: $total lines would change"
    ;;
*)
    clang-format --dry-run -Werror "${files[@]}"
    ;;
esac
