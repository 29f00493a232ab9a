#!/usr/bin/env bash
# Checks the shipped systemd units without a running systemd:
#   * `systemd-analyze security --offline=true --threshold=20`: fails above exposure 2.0;
#   * `systemd-analyze verify`: syntax, and that every Exec*= binary exists.
# The units name /usr/bin/...; verify runs on copies that point at binaries from a build.
#
# Usage: packaging/check-units.sh [BIN_DIR]
#   BIN_DIR holds contera-agent and contera-provisioning
#   (default: ${CARGO_TARGET_DIR:-target}/release, then .../debug).
# Prints one line per unit with its exposure score; exits non-zero on any failure.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
units=(contera-agent.service contera-provisioning.service)
threshold=20 # exposure × 10

bin_dir=${1:-}
if [[ -z $bin_dir ]]; then
    target=${CARGO_TARGET_DIR:-$root/target}
    for d in "$target/release" "$target/debug"; do
        if [[ -x $d/contera-agent && -x $d/contera-provisioning ]]; then
            bin_dir=$d
            break
        fi
    done
fi
if [[ -z $bin_dir || ! -x $bin_dir/contera-agent || ! -x $bin_dir/contera-provisioning ]]; then
    echo "check-units: no built contera-agent and contera-provisioning in '${bin_dir:-${CARGO_TARGET_DIR:-$root/target}/{release,debug\}}'" >&2
    echo "  build them first (cargo build --release -p contera-agent -p contera-provisioning) or pass BIN_DIR" >&2
    exit 2
fi
bin_dir=$(cd "$bin_dir" && pwd)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

failed=0
for unit in "${units[@]}"; do
    src=$here/$unit

    # Exposure score, on the unit exactly as shipped.
    if out=$(systemd-analyze security --offline=true --threshold="$threshold" --no-pager "$src" 2>&1); then
        rc=0
    else
        rc=$?
    fi
    score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$out")
    # Parse warnings ("Invalid syntax, ignoring", "Unknown key") only go to stderr and
    # would lower the score silently: treat them as failures too.
    warnings=$(grep -E "^$src:[0-9]+:" <<<"$out" || true)
    if [[ $rc -ne 0 || -z $score || -n $warnings ]]; then
        echo "FAIL security $unit: exposure ${score:-?} (threshold $((threshold / 10)).$((threshold % 10)), rc $rc)"
        grep -E '✗|^/' <<<"$out" || true
        failed=1
    else
        echo "ok   security $unit: exposure $score"
    fi

    # verify, on a copy whose Exec*= lines point at the built binaries.
    sed -e "s|/usr/bin/contera-agent|$bin_dir/contera-agent|g" \
        -e "s|/usr/bin/contera-provisioning|$bin_dir/contera-provisioning|g" \
        "$src" >"$work/$unit"
    if out=$(systemd-analyze verify --man=no "$work/$unit" 2>&1) && [[ -z $out ]]; then
        echo "ok   verify   $unit"
    else
        echo "FAIL verify   $unit"
        sed "s|$work/||g" <<<"$out"
        failed=1
    fi
done

exit "$failed"
