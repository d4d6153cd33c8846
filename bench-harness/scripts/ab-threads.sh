#!/bin/bash
# A/B of one [wal] setting by CPU time per event and thread (issue 16's fast path and O_DIRECT
# writes were measured with it). Starts Sluice (2 shards, TCP source, raw file sink or TCP relay to a local
# receiver), sends COUNT events with `sluice-bench load` (at RATE if set), waits until the
# output sent them all, prints events/s and CPU ns per event per thread from /proc.
# usage: ab-threads.sh '[wal] LINE' file|relay COUNT      (RATE=800000 for a fixed rate;
#   FORMAT=rfc5424-varied for free text that compresses like real logs; SINK_LINE='page_cache =
#   "keep"' adds a line to the file sink's table; FSYNC=5ms sets [wal] fsync, default 2ms)
#   e.g. ab-threads.sh 'io = "buffered"' relay 4000000;  ab-threads.sh 'fast_path_commits = 0' ...
# Run from the workspace root after `cargo build --release` (SLUICE_BIN=path runs another build
# of sluice, for A/B between builds); traffic stays on 127.0.0.1.
set -eu
WAL_LINE=$1; SINK=$2; COUNT=$3
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=${WORK:-/tmp/sluice-ab}
rm -rf "$WORK"; mkdir -p "$WORK/data"
cat > "$WORK/conf.toml" <<C
data_dir = "$WORK/data"
shards = 2
[wal]
fsync = "${FSYNC:-2ms}"
segment_size = "128MiB"
$WAL_LINE
[api]
address = "127.0.0.1:19614"
[sources.t]
type = "syslog"
mode = "tcp"
address = "127.0.0.1:15614"
C
RECV=""
if [ "$SINK" = file ]; then
  printf '[sinks.out]\ntype = "file"\npath = "%s/data/out/events.log"\nencoding = "raw"\nrotate_size = "100GB"\n' "$WORK" >> "$WORK/conf.toml"
  [ -n "${SINK_LINE:-}" ] && printf '%s\n' "$SINK_LINE" >> "$WORK/conf.toml"
else
  python3 -c "
import socket,threading
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1); s.bind(('127.0.0.1',15615)); s.listen(8)
def r(c):
    while c.recv(1<<20): pass
while True:
    c,_=s.accept(); threading.Thread(target=r,args=(c,),daemon=True).start()
" & RECV=$!
  trap 'kill "$RECV" 2>/dev/null || true' EXIT # also when Sluice does not start
  sleep 0.5
  printf '[sinks.out]\ntype = "tcp"\naddress = "127.0.0.1:15615"\nframing = "octet_counting"\nencoding = "raw"\n' >> "$WORK/conf.toml"
fi
"${SLUICE_BIN:-$ROOT/target/release/sluice}" run --config "$WORK/conf.toml" > "$WORK/sluice.log" 2>&1 &
PID=$!
for _ in $(seq 100); do grep -q "ready;" "$WORK/sluice.log" && break; sleep 0.1; done
kill -0 "$PID" 2>/dev/null || { cat "$WORK/sluice.log" >&2; exit 1; }
sleep 2 # the ready segment files are written
TOKEN=$(cat "$WORK/data/api.token")
python3 "$HERE/threads.py" snap "$PID" > "$WORK/before.txt"
t0=$(date +%s.%N)
"$ROOT/target/release/sluice-bench" load --address 127.0.0.1:15614 --count "$COUNT" --connections 4 ${RATE:+--rate $RATE} ${FORMAT:+--format $FORMAT} > "$WORK/load.log" 2>&1
while true; do
  sent=$(curl -s -H "Authorization: Bearer $TOKEN" 127.0.0.1:19614/metrics | awk '/^sluice_output_events_sent_total/{s+=$2} END{print s+0}')
  [ "$sent" -ge "$COUNT" ] && break
  sleep 0.02
done
t1=$(date +%s.%N)
python3 "$HERE/threads.py" snap "$PID" > "$WORK/after.txt"
curl -s -H "Authorization: Bearer $TOKEN" 127.0.0.1:19614/metrics | awk -v n="$COUNT" '/^sluice_wal_fast_path_over_budget_total/{o+=$2} /^sluice_wal_bytes_total/{s+=$2} /^sluice_wal_block_raw_bytes_total/{r+=$2} /^sluice_wal_fast_path_commits_total/{h+=$2} /^sluice_wal_fast_path_full_total/{f+=$2} /^sluice_wal_fsyncs_total/{c+=$2} END{printf "WAL bytes per event: %.0f (compressed commits held %.0f); fdatasyncs %d, commits to the fast path %d, ring full %d, over budget %d\n", s/n, r/n, c, h, f, o}'
RSS=$(awk '/^VmHWM/{print $2}' "/proc/$PID/status")
kill "$PID"; wait "$PID" 2>/dev/null || true
echo "peak RSS: $((RSS / 1024)) MiB"
python3 -c "print('$WAL_LINE sink=$SINK events/s=%.2fM' % ($COUNT/($t1-$t0)/1e6))"
python3 "$HERE/threads.py" diff "$WORK/before.txt" "$WORK/after.txt" "$COUNT"
