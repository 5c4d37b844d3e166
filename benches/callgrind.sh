#!/usr/bin/env bash
# Instructions per layer hit, counted by callgrind: (a) the bare service, (b) the layer on it
# (benches/hit_instructions.rs). Each mode runs at two request counts; the difference divided by
# the difference in requests is the cost of one request, without set-up or warming.
#
# Usage: benches/callgrind.sh [--cache-sim]
#   --cache-sim  also count first-level data read misses per request (simulated caches)
# Needs valgrind. About two minutes after the build.
set -euo pipefail
cd "$(dirname "$0")/.."

sim=no
if [[ "${1:-}" == "--cache-sim" ]]; then
    sim=yes
fi
command -v valgrind >/dev/null || {
    echo "callgrind.sh needs valgrind (apt-get install valgrind)" >&2
    exit 1
}

bin=$(cargo bench --bench hit_instructions --no-run --message-format=json \
    | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
[[ -x "$bin" ]] || {
    echo "no hit_instructions executable from cargo" >&2
    exit 1
}

out=$(mktemp -d)
small=50000
large=100000
for mode in a b; do
    for n in $small $large; do
        valgrind --tool=callgrind --cache-sim=$sim --callgrind-out-file="$out/$mode.$n" \
            --zero-before='*measure_start*' --dump-before='*measure_end*' \
            "$bin" "$mode" "$n" >"$out/$mode.$n.log" 2>&1 &
    done
done
wait
for mode in a b; do
    for n in $small $large; do
        grep -q '^ok:' "$out/$mode.$n.log" || {
            echo "mode $mode, $n requests failed:" >&2
            tail -n 20 "$out/$mode.$n.log" >&2
            exit 1
        }
    done
done

# The first dump (.1) holds the measured loop only. Its summary line lists the events in order:
# Ir, then with the cache simulation Dr Dw I1mr D1mr ...
event() { # mode requests field
    awk -v field="$3" '/^summary:/ { print $field; exit }' "$out/$1.$2.1"
}
per_request() { # mode field
    echo "$(event "$1" $large "$2") $(event "$1" $small "$2")" |
        awk -v d=$((large - small)) '{ printf "%.1f", ($1 - $2) / d }'
}
a=$(per_request a 2)
b=$(per_request b 2)
echo "instructions per request: (a) $a, (b) $b, (b)/(a) $(echo "$b $a" | awk '{ printf "%.3f", $1 / $2 }')"
if [[ $sim == yes ]]; then
    echo "first-level data read misses per request: (a) $(per_request a 6), (b) $(per_request b 6)"
fi
rm -rf "$out"
