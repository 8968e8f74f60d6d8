#!/usr/bin/env bash
# Builds the fuzz targets and runs each, one at a time, for FUZZ_SECONDS (default 60): first
# over its regression inputs (fuzz/regressions/<target>/, committed) and the seeds that
# fuzz/seeds.py makes (fuzz/corpus/<target>/, not committed), then fuzzing from them. Any crash,
# timeout or out-of-memory fails the run; the input that caused it is copied into
# fuzz/regressions/<target>/ (and printed in base64 when small) so that it can be committed.
#
# Used by .ci/run; locally: `bash fuzz/ci.sh`, or FUZZ_TARGETS="pdu stow" FUZZ_SECONDS=600.
# FUZZ_TARGET_DIR: where the fuzz build goes (default fuzz/target).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds=${FUZZ_SECONDS:-60}
# The same flags for build and run (or `run` builds again): optimised, with debug assertions
# and overflow checks, 16 codegen units for a shorter build. The sanitizer is FUZZ_SANITIZER:
# `none` by default (the node's code is safe Rust, where AddressSanitizer finds nothing the
# language does not already stop, and skipping it makes the build and the runs markedly
# cheaper); `FUZZ_SANITIZER=address` for the C libraries behind the pixel codecs. Memory
# exhaustion is caught either way, by libFuzzer's RSS limit.
flags=(--release --debug-assertions --codegen-units 16 -s "${FUZZ_SANITIZER:-none}"
    --target-dir "${FUZZ_TARGET_DIR:-fuzz/target}")
libfuzzer_flags=(-max_total_time="${seconds}" -rss_limit_mb=2048 -timeout=25 -print_final_stats=1)

command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
cargo +nightly fuzz --version

t0=$(date +%s)
cargo +nightly fuzz build "${flags[@]}"
echo "fuzz targets built in $(($(date +%s) - t0))s"

# Seeds: pydicom's test files, the node's synthetic series (when the pacs binary is built, as
# it is after `cargo test`), hand-made PDUs, multipart bodies and query strings.
synth=$(mktemp -d "${TMPDIR:-/tmp}/pacs-fuzz-synth.XXXXXX")
log=$(mktemp "${TMPDIR:-/tmp}/pacs-fuzz-log.XXXXXX")
trap 'rm -rf "${synth}" "${log}"' EXIT
pacs_bin=${PACS_BIN:-target/debug/pacs}
synth_args=()
if [ -x "${pacs_bin}" ]; then
    "${pacs_bin}" synth --modality CT --slices 2 --series 2 --seed 7 --out "${synth}/ct" >/dev/null
    "${pacs_bin}" synth --modality MR --slices 2 --seed 8 --out "${synth}/mr" >/dev/null
    synth_args=(--synth "${synth}")
else
    echo "no ${pacs_bin}: seeds without the synthetic series"
fi
python3 fuzz/seeds.py "${synth_args[@]}" --out fuzz/corpus

targets=${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}
failed=()
for target in ${targets}; do
    mkdir -p "fuzz/corpus/${target}" "fuzz/regressions/${target}"
    rm -rf "fuzz/artifacts/${target}"
    mkdir -p "fuzz/artifacts/${target}"
    echo "--- ${target}: $(find "fuzz/regressions/${target}" -type f | wc -l) regression inputs, ${seconds}s"
    t0=$(date +%s)
    if cargo +nightly fuzz run "${flags[@]}" "${target}" \
        "fuzz/corpus/${target}" "fuzz/regressions/${target}" -- "${libfuzzer_flags[@]}" \
        >"${log}" 2>&1; then
        grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)|^#[0-9]+ +DONE' "${log}" || true
        echo "--- ${target}: no finding in $(($(date +%s) - t0))s"
    else
        tail -n 80 "${log}"
        for input in "fuzz/artifacts/${target}"/*; do
            [ -f "${input}" ] || continue
            cp "${input}" "fuzz/regressions/${target}/"
            echo "kept: fuzz/regressions/${target}/$(basename "${input}")"
            if [ "$(stat -c %s "${input}")" -le 16384 ]; then
                echo "base64 of $(basename "${input}"):"
                base64 -w 0 "${input}"
                echo
            fi
        done
        echo "--- ${target}: FAILED after $(($(date +%s) - t0))s"
        failed+=("${target}")
    fi
done
if [ "${#failed[@]}" -ne 0 ]; then
    echo "fuzzing found crashes in: ${failed[*]}" >&2
    exit 1
fi
