#!/usr/bin/env bash
# =============================================================================
# tests/bench/compare.sh [WORKDIR] - shoal against Syncthing and rsync, in one
# run, on this machine, over loopback only. Not a test: it prints figures
# (and checks them against the performance targets) but always exits 0 when
# the run itself completed; a system that fails a phase gets a FAIL row with
# the reason from its logs.
#
#   nice tests/bench/compare.sh                              # full size, RUNS=3
#   RUNS=1 SMALL_FILES=500 LARGE_SIZE=64MiB tests/bench/compare.sh   # quick check
#
# Everything runs inside a private network namespace (unshare -n, plus a PID
# namespace with --kill-child when possible) whose only interface is lo, so
# nothing can reach any address but 127.0.0.1. Syncthing is configured as the
# anchor harness (../shared/anchors/syncthing-bench.sh) does: discovery,
# relays, NAT, usage reporting, upgrades and crash reports off before its
# first start, and checked over REST after it.
#
# Datasets (../shared/anchors/gen-dataset.py, deterministic from SEED): small
# = SMALL_FILES files in SMALL_DIRS dirs, 1-256 KiB log-uniform (seed 42:
# 459,541,699 bytes); large = one LARGE_SIZE file. Generated once per run and
# copied (cp -a) to each system's sender directory.
#
# Phases of one run, each taken by every system in turn before the next
# phase starts; the order of the systems rotates from run to run, so slow
# drift of the machine spreads evenly (A = sender, B = receiver):
#   idle-after-start        RSS of A and B right after start + connect (not a peak)
#   small-scanA             folder added on A -> A idle with the whole tree indexed
#   small-sync              A shares, B accepts -> B idle, nothing needed, every
#                           file present (content compared afterwards, untimed)
#                           rsync: `rsync -a` into an empty dir on the daemon
#   small-rescan-unchanged  blocking rescan of the unchanged tree on A (shoal:
#                           `shoal scan small --wait`); rsync: a second `rsync -a`
#   latency-4k              probe-4k.bin rewritten in place on A -> same bytes on
#                           B (polled every LAT_POLL_S); shoal: its inotify
#                           watcher (100 ms settle); Syncthing: its watcher with
#                           fsWatcherDelayS=ST_WATCH_DELAY_S on the small tree
#                           (default 1, the smallest it takes; Syncthing's own
#                           default is 10, which the large file keeps, so that
#                           there the explicit rescan, not the watcher, sees a
#                           delta mutation, as in the anchor harness)
#   large-scanA, large-sync the same for the single large file
#   (shoal: A and B share an empty folder "hello" from the start, because shoal
#   connects only to devices it shares a folder with; sharing another folder
#   makes shoal redial, which is inside the timed window, as it is for users)
#   delta-modify            1 MiB overwritten in place in the middle; t0 = write
#                           done; explicit rescan of that file on A, then until B
#                           has A's new version (shoal: B's file has A's size and
#                           mtime and B is idle; Syncthing: B's version vector)
#   delta-insert            100 bytes inserted at offset 0
#   delta-*-scanA           the explicit rescan part of the above
#                           rsync deltas: `rsync -a --no-whole-file` to the daemon
#   limit-*                 the machine: one-core BLAKE2b-256, ChaCha20-Poly1305,
#                           AES-256-GCM with libsodium (compare_crypto.c), reading
#                           the large file from the page cache, copying it with fsync
#
# Columns of raw.tsv: run system phase wall_s payload_bytes MBps wire_in_bytes
#   tcp_in_bytes cpu_A_s cpu_B_s rss_A_MiB rss_B_MiB status note
#   MBps = payload / wall / 1e6. wire_in_bytes = what B's own counter says it
#   received from A in the phase (shoal: devices[].in_bytes of `status --json`,
#   bytes read from the socket, i.e. including Noise framing and tags;
#   Syncthing: inBytesTotal, protocol bytes after TLS; rsync: "Total bytes
#   sent" of the client). tcp_in_bytes = TCP payload bytes received by B's
#   sync socket(s) (ss bytes_received delta). cpu = utime+stime of the process
#   (all threads) in the phase; rss = peak RSS (VmHWM, reset through
#   /proc/PID/clear_refs at the phase start). For rsync A = client (sender),
#   B = daemon (receiver), both from GNU time.
#
# Knobs (environment): RUNS=3 SEED=42 SMALL_FILES=10000 SMALL_DIRS=100
#   LARGE_SIZE=1GiB DO_SHOAL=1 DO_SYNCTHING=1 DO_RSYNC=1 DO_LIMITS=1
#   DO_LATENCY=1 LAT_REPS=5 RESCAN_REPS=3 POLL_S=0.05 LAT_POLL_S=0.005
#   PHASE_TIMEOUT_S=600 ST_WATCH_DELAY_S=1 ST_LOW_PRIORITY=false KEEP_WORK=0 WORK_DIR=/tmp
#   SHOAL_BIN=<repo>/build/agent/shoal (SHOAL_REV=text: where it was built from,
#   for env.txt) ST_BIN=syncthing
#   GEN=<repo>/../shared/anchors/gen-dataset.py PY=/usr/bin/python3
#   RESULTS_DIR=/tmp/shoal-bench-results/<timestamp>
#   SHOAL_PORT_A=22201 SHOAL_PORT_B=22202 ST_SYNC_PORT_A=22101
#   ST_SYNC_PORT_B=22102 ST_GUI_PORT_A=18384 ST_GUI_PORT_B=18385 RSYNC_PORT=18730
# Disk at full size, in WORKDIR (default a new shoal-bench-work.* under WORK_DIR, or /tmp): about
# 10 GiB during a run, plus 3.2 GiB for each earlier run (the small trees are
# kept until the end, see run_one). Everything is removed at exit (KEEP_WORK=1 keeps it).
# Output in RESULTS_DIR: raw.tsv, summary.md (the table, the machine's limits,
# the ratios shoal/Syncthing and shoal/rsync, the targets), bench.log,
# env.txt, the agents' logs, sockets.txt, rsync stats.
# =============================================================================
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SELF=$HERE/$(basename "${BASH_SOURCE[0]}")
REPO=$(cd "$HERE/../.." && pwd)

# --- private network namespace: only lo ------------------------------------
# shellcheck source=netns.sh
source "$HERE/netns.sh"
bench_netns COMPARE_NETNS "$SELF" "$@"

# --- parameters ----------------------------------------------------------------
RUNS=${RUNS:-3}
SEED=${SEED:-42}
SMALL_FILES=${SMALL_FILES:-10000}
SMALL_DIRS=${SMALL_DIRS:-100}
LARGE_SIZE=${LARGE_SIZE:-1GiB}
DO_SHOAL=${DO_SHOAL:-1}
DO_SYNCTHING=${DO_SYNCTHING:-1}
DO_RSYNC=${DO_RSYNC:-1}
DO_LIMITS=${DO_LIMITS:-1}
DO_LATENCY=${DO_LATENCY:-1}
LAT_REPS=${LAT_REPS:-5}
RESCAN_REPS=${RESCAN_REPS:-3}
POLL_S=${POLL_S:-0.05}
LAT_POLL_S=${LAT_POLL_S:-0.005}
PHASE_TIMEOUT_S=${PHASE_TIMEOUT_S:-600}
ST_WATCH_DELAY_S=${ST_WATCH_DELAY_S:-1}
ST_LOW_PRIORITY=${ST_LOW_PRIORITY:-false}
KEEP_WORK=${KEEP_WORK:-0}
SHOAL_BIN=${SHOAL_BIN:-$REPO/build/agent/shoal}
ST_BIN=${ST_BIN:-syncthing}
GEN=${GEN:-$REPO/../shared/anchors/gen-dataset.py}
if [[ -z ${PY:-} ]]; then
  if [[ -x /usr/bin/python3 ]]; then PY=/usr/bin/python3; else PY=python3; fi
fi
SHOAL_PORT_A=${SHOAL_PORT_A:-22201}
SHOAL_PORT_B=${SHOAL_PORT_B:-22202}
ST_SYNC_PORT_A=${ST_SYNC_PORT_A:-22101}
ST_SYNC_PORT_B=${ST_SYNC_PORT_B:-22102}
ST_GUI_PORT_A=${ST_GUI_PORT_A:-18384}
ST_GUI_PORT_B=${ST_GUI_PORT_B:-18385}
RSYNC_PORT=${RSYNC_PORT:-18730}
RESULTS_DIR=${RESULTS_DIR:-/tmp/shoal-bench-results/$(date +%Y%m%d-%H%M%S)}
WORK=${1:-}
CLK_TCK=$(getconf CLK_TCK)
HELPER=$HERE/compare_helper.py

mkdir -p "$RESULTS_DIR"
RAW=$RESULTS_DIR/raw.tsv
LOG=$RESULTS_DIR/bench.log
[[ -f $RAW ]] || printf 'run\tsystem\tphase\twall_s\tpayload_bytes\tMBps\twire_in_bytes\ttcp_in_bytes\tcpu_A_s\tcpu_B_s\trss_A_MiB\trss_B_MiB\tstatus\tnote\n' >"$RAW"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$LOG" >&2; }
die() { log "FATAL: $*"; exit 1; }
now() { date +%s.%N; }
fsub() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", a-b}'; }
H() { "$PY" "$HELPER" "$@"; }
jget() { "$PY" -c "import json,sys; d=json.load(sys.stdin); print(d$1)"; }

[[ -x $SHOAL_BIN || $DO_SHOAL != 1 ]] || die "no shoal binary at $SHOAL_BIN (cmake -S . -B build && cmake --build build, or set SHOAL_BIN)"
[[ -f $GEN ]] || { [[ -f /work/shared/anchors/gen-dataset.py ]] && GEN=/work/shared/anchors/gen-dataset.py; }
[[ -f $GEN ]] || die "no dataset generator at $GEN (set GEN=.../gen-dataset.py)"
[[ $DO_SYNCTHING != 1 ]] || command -v "$ST_BIN" >/dev/null || die "no $ST_BIN (apt-get install syncthing)"
[[ $DO_RSYNC != 1 ]] || command -v rsync >/dev/null || die "no rsync (apt-get install rsync)"
[[ -x /usr/bin/time ]] || die "GNU time (/usr/bin/time) is required"
# WORK_DIR: where the work directory is made (a filesystem to measure, e.g. an
# XFS mount); the script makes and removes its own subdirectory there.
if [[ -z $WORK ]]; then
  [[ -z ${WORK_DIR:-} || -d ${WORK_DIR:-} ]] || die "WORK_DIR=$WORK_DIR is not a directory"
  WORK=$(mktemp -d "${WORK_DIR:-/tmp}/shoal-bench-work.XXXXXX")
fi
mkdir -p "$WORK"
FAIL_FILE=$WORK/.last-failure

# --- per-process metrics -----------------------------------------------------------
declare -A PID_A=() PID_B=() PORT_A=() PORT_B=() BROKEN=()
declare -A M_CPU_A0=() M_CPU_B0=() M_WIRE0=() M_TCP0=()
proc_cpu() {  # utime+stime of all threads, seconds
  [[ -n ${1:-} && -r /proc/$1/stat ]] || { echo NA; return; }
  sed -E 's/^.*\) //' "/proc/$1/stat" | awk -v t="$CLK_TCK" '{printf "%.2f", ($12+$13)/t}'
}
proc_hwm_mib() { [[ -n ${1:-} && -r /proc/$1/status ]] && awk '/^VmHWM/{printf "%.1f", $2/1024}' "/proc/$1/status" || echo NA; }
proc_rss_mib() { [[ -n ${1:-} && -r /proc/$1/status ]] && awk '/^VmRSS/{printf "%.1f", $2/1024}' "/proc/$1/status" || echo NA; }
proc_rss_split() {  # current RssAnon/RssFile in MiB (file = mapped files such as LMDB)
  [[ -n ${1:-} && -r /proc/$1/status ]] || { echo NA; return; }
  awk '/^RssAnon/{a=$2} /^RssFile/{f=$2} END{printf "%.1f/%.1f", a/1024, f/1024}' "/proc/$1/status"
}
proc_reset_hwm() { [[ -n ${1:-} ]] && { echo 5 >"/proc/$1/clear_refs"; } 2>/dev/null || true; }
csub() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a=="NA"||b=="NA") print "NA"; else printf "%.2f", a-b }'; }

# row RUN SYS PHASE WALL PAYLOAD WIRE TCP CPU_A CPU_B RSS_A RSS_B STATUS NOTE
row() {
  local mbps
  mbps=$(awk -v w="$4" -v p="$5" 'BEGIN{ if (w+0>0 && p+0>0) printf "%.1f", p/w/1e6; else print "-" }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$mbps" \
    "$6" "$7" "$8" "$9" "${10}" "${11}" "${12}" "${13:--}" >>"$RAW"
  log "  $2 $3: wall=$4 s MB/s=$mbps wire=$6 tcp=$7 cpuA=$8 cpuB=$9 rssA=${10} rssB=${11} [${12}] ${13:-}"
}

# drv SYS FUNC ARGS: calls SYS_FUNC; the helper's waits watch SYS's agents.
drv() {
  local s=$1 f=$2 WATCH_PIDS
  shift 2
  WATCH_PIDS="${PID_A[$s]:-} ${PID_B[$s]:-}"
  export WATCH_PIDS
  "${s}_$f" "$@"
}
proc_alive() { [[ -n ${1:-} && -r /proc/$1/stat ]] && ! sed -E 's/^.*\) //' "/proc/$1/stat" | grep -q '^[ZX]'; }
# agents_dead SYS: prints why and returns 0 when an agent of SYS has exited.
agents_dead() {
  local s=$1
  [[ $s == rsync ]] && return 1
  if proc_alive "${PID_A[$s]:-}" && proc_alive "${PID_B[$s]:-}"; then return 1; fi
  echo "an agent has exited; last log lines: $(drv "$s" last_words)"
  return 0
}

m_begin() {  # SYS
  local s=$1
  M_CPU_A0[$s]=$(proc_cpu "${PID_A[$s]}"); M_CPU_B0[$s]=$(proc_cpu "${PID_B[$s]}")
  proc_reset_hwm "${PID_A[$s]}"; proc_reset_hwm "${PID_B[$s]}"
  M_WIRE0[$s]=$(drv "$s" wire_in_bytes 2>/dev/null || echo NA)
  M_TCP0[$s]=$(H tcp-snap "${PID_B[$s]}" "${PORT_B[$s]}" "${PORT_A[$s]}")
  drv "$s" mark
}
m_end() {  # RUN SYS PHASE WALL PAYLOAD STATUS NOTE
  local run=$1 s=$2 phase=$3 wall=$4 payload=$5 st=$6 note=${7:--} wire tcp anom w1
  w1=$(drv "$s" wire_in_bytes 2>/dev/null || echo NA)
  wire=$(awk -v a="$w1" -v b="${M_WIRE0[$s]}" 'BEGIN{ if (a=="NA"||b=="NA") print "NA"; else printf "%d", a-b }')
  tcp=$(H tcp-delta "${M_TCP0[$s]}" "$(H tcp-snap "${PID_B[$s]}" "${PORT_B[$s]}" "${PORT_A[$s]}")")
  anom=$(drv "$s" anomalies | tr '\n' ';' | sed 's/;$//')
  if [[ $anom == *WARN* || $anom == *rror* || $anom == *syncthing* ]]; then
    note="$note; ANOMALY: $anom"
  elif [[ -n $anom ]]; then
    note="$note; $anom"
  fi
  note="$note; RSS now anon/file MiB A=$(proc_rss_split "${PID_A[$s]}") B=$(proc_rss_split "${PID_B[$s]}")"
  row "$run" "$s" "$phase" "$wall" "$payload" "$wire" "$tcp" \
    "$(csub "$(proc_cpu "${PID_A[$s]}")" "${M_CPU_A0[$s]}")" \
    "$(csub "$(proc_cpu "${PID_B[$s]}")" "${M_CPU_B0[$s]}")" \
    "$(proc_hwm_mib "${PID_A[$s]}")" "$(proc_hwm_mib "${PID_B[$s]}")" "$st" "$note"
}
m_fail() {  # RUN SYS PHASE PAYLOAD WHAT: a failed phase, reason from the helper and the logs
  local reason
  reason="$5: $(head -c 600 "$FAIL_FILE" 2>/dev/null | tr '\n' ' '); log: $(drv "$2" fail_reason)"
  agents_dead "$2" >/dev/null && reason="$reason; $(agents_dead "$2")"
  m_end "$1" "$2" "$3" NA "$4" FAIL "$reason"
}
skip_row() { row "$1" "$2" "$3" NA - - - - - - - SKIP "$4"; }

settle() { sync; sleep "${1:-1}"; }   # flush dirty pages between phases (untimed)

# verify SRC DST SYS PHASE RUN: content check outside the timed window
verify() {
  local a b
  a=$("$PY" "$GEN" digest "$1" | jget "['digest']")
  b=$("$PY" "$GEN" digest "$2" | jget "['digest']")
  if [[ $a == "$b" ]]; then
    log "  verified $3 $4: identical"
    return 0
  fi
  row "$5" "$3" "$4-verify" NA - - - - - - - FAIL "content of $2 differs from $1"
  return 1
}

# --- process bookkeeping (only PIDs we started) ---------------------------
BG_PIDS=()
stop_pid() {  # PID [GRACE_S]
  local p=$1 grace=${2:-10} i
  kill -TERM "$p" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
  wait "$p" 2>/dev/null || true
}
cleanup() {
  local rc=$? p
  set +e
  [[ $DO_SHOAL == 1 ]] && shoal_stop >/dev/null 2>&1
  [[ $DO_SYNCTHING == 1 ]] && syncthing_stop >/dev/null 2>&1
  [[ -n ${RSD_PID:-} ]] && kill -TERM "$RSD_PID" 2>/dev/null
  for p in "${BG_PIDS[@]}"; do
    kill -0 "$p" 2>/dev/null && { kill -TERM "$p" 2>/dev/null; sleep 0.5; kill -KILL "$p" 2>/dev/null; }
    wait "$p" 2>/dev/null
  done
  if [[ $KEEP_WORK != 1 && -n $WORK && $WORK != / ]]; then rm -rf "$WORK"; fi
  log "cleanup done (rc=$rc)"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=compare_driver.sh
source "$HERE/compare_driver.sh"

# --- phases -----------------------------------------------------------------------
declare -A FILES=() ITEMS=() BYTES=()

ph_scanA() {  # RUN SYS DS
  local run=$1 s=$2 ds=$3 t0 t1 why
  [[ $s == rsync ]] && return 0
  if why=$(agents_dead "$s"); then skip_row "$run" "$s" "$ds-scanA" "$why"; BROKEN[$s.$ds]=$why; return 0; fi
  settle
  m_begin "$s"; t0=$(now)
  drv "$s" add_sender "$ds" "$WORK/run$run/$s/A/$ds"
  if t1=$(drv "$s" wait_scanned "$ds" "${FILES[$ds]}" "${ITEMS[$ds]}" "${BYTES[$ds]}"); then
    m_end "$run" "$s" "$ds-scanA" "$(fsub "$t1" "$t0")" "${BYTES[$ds]}" ok "A indexes ${FILES[$ds]} files"
  else
    m_fail "$run" "$s" "$ds-scanA" "${BYTES[$ds]}" "A did not finish indexing in ${PHASE_TIMEOUT_S}s"
    BROKEN[$s.$ds]="$ds-scanA failed"
  fi
}

ph_sync() {  # RUN SYS DS
  local run=$1 s=$2 ds=$3 d=$WORK/run$1/$2 t0 t1 why
  settle 2
  if [[ $s == rsync ]]; then
    rsync_measure "$run" "$ds-sync" "${BYTES[$ds]}" "$d" -a --stats "$d/src/$ds/" \
      "rsync://127.0.0.1:$RSYNC_PORT/dst/$ds/" && verify "$d/src/$ds" "$d/dst/$ds" rsync "$ds-sync" "$run" \
      || BROKEN[$s.$ds]="$ds-sync failed"
    return 0
  fi
  [[ -z ${BROKEN[$s.$ds]:-} ]] || { skip_row "$run" "$s" "$ds-sync" "${BROKEN[$s.$ds]}"; return 0; }
  if why=$(agents_dead "$s"); then skip_row "$run" "$s" "$ds-sync" "$why"; BROKEN[$s.$ds]=$why; return 0; fi
  m_begin "$s"; t0=$(now)
  drv "$s" share "$ds" "$d/B/$ds"
  if t1=$(drv "$s" wait_synced "$ds" "${FILES[$ds]}" "${ITEMS[$ds]}" "${BYTES[$ds]}"); then
    m_end "$run" "$s" "$ds-sync" "$(fsub "$t1" "$t0")" "${BYTES[$ds]}" ok "share -> B complete (send -> receive)"
    verify "$d/A/$ds" "$d/B/$ds" "$s" "$ds-sync" "$run" || BROKEN[$s.$ds]="$ds-sync content differs"
  else
    m_fail "$run" "$s" "$ds-sync" "${BYTES[$ds]}" "B not complete after ${PHASE_TIMEOUT_S}s"
    BROKEN[$s.$ds]="$ds-sync failed"
  fi
}

ph_rescan() {  # RUN SYS I
  local run=$1 s=$2 i=$3 d=$WORK/run$1/$2 t0 t1 why
  settle
  if [[ $s == rsync ]]; then
    [[ -z ${BROKEN[$s.small]:-} ]] || { skip_row "$run" "$s" "small-rescan-unchanged#$i" "${BROKEN[$s.small]}"; return 0; }
    rsync_measure "$run" "small-rescan-unchanged#$i" 0 "$d" -a --stats "$d/src/small/" \
      "rsync://127.0.0.1:$RSYNC_PORT/dst/small/" || true
    return 0
  fi
  [[ -z ${BROKEN[$s.small]:-} || ${BROKEN[$s.small]} != small-scanA* ]] \
    || { skip_row "$run" "$s" "small-rescan-unchanged#$i" "${BROKEN[$s.small]}"; return 0; }
  if why=$(agents_dead "$s"); then skip_row "$run" "$s" "small-rescan-unchanged#$i" "$why"; return 0; fi
  m_begin "$s"; t0=$(now)
  if drv "$s" rescan small 2>"$FAIL_FILE"; then
    t1=$(now)
    m_end "$run" "$s" "small-rescan-unchanged#$i" "$(fsub "$t1" "$t0")" 0 ok "blocking rescan of A, nothing changed"
  else
    m_fail "$run" "$s" "small-rescan-unchanged#$i" 0 "rescan command failed"
  fi
}

ph_latency() {  # RUN SYS I
  local run=$1 s=$2 i=$3 d=$WORK/run$1/$2 j why
  [[ $s == rsync ]] && return 0
  [[ -z ${BROKEN[$s.small]:-} ]] || { skip_row "$run" "$s" "latency-4k#$i" "${BROKEN[$s.small]}"; return 0; }
  if why=$(agents_dead "$s"); then skip_row "$run" "$s" "latency-4k#$i" "$why"; return 0; fi
  sleep "$(drv "$s" latency_gap)"
  m_begin "$s"
  if j=$(WATCH_PIDS="${PID_A[$s]} ${PID_B[$s]}" H latency "$d/A/small/probe-4k.bin" "$d/B/small/probe-4k.bin" "$SEED" "r${run}i$i" 60 "$LAT_POLL_S"); then
    echo "$j" >>"$LOG"
    m_end "$run" "$s" "latency-4k#$i" "$(jget "['latency_s']" <<<"$j" | xargs printf '%.3f')" 4096 ok \
      "$([[ $s == shoal ]] && echo "inotify watcher, 100 ms settle" || echo "fs watcher, fsWatcherDelayS=$ST_WATCH_DELAY_S")"
  else
    echo "$j" >"$FAIL_FILE"
    m_fail "$run" "$s" "latency-4k#$i" 4096 "B did not get the 4 KiB edit within 60 s"
  fi
}

ph_delta() {  # RUN SYS KIND(modify|insert)
  local run=$1 s=$2 kind=$3 d=$WORK/run$1/$2 j t0 t1 tscan tok size off f why
  settle 2
  if [[ $s == rsync ]]; then f=$d/src/large/large.bin; else f=$d/A/large/large.bin; fi
  [[ -z ${BROKEN[$s.large]:-} ]] || { skip_row "$run" "$s" "delta-$kind" "${BROKEN[$s.large]}"; return 0; }
  if [[ $s == rsync ]]; then
    j=$(mutate "$kind" "$f"); settle
    rsync_measure "$run" "delta-$kind" "$(jget "['size']" <<<"$j")" "$d" -a --no-whole-file --stats \
      "$d/src/large/" "rsync://127.0.0.1:$RSYNC_PORT/dst/large/" \
      && verify "$d/src/large" "$d/dst/large" rsync "delta-$kind" "$run" || BROKEN[$s.large]="delta-$kind failed"
    return 0
  fi
  if why=$(agents_dead "$s"); then skip_row "$run" "$s" "delta-$kind" "$why"; BROKEN[$s.large]=$why; return 0; fi
  m_begin "$s"
  j=$(mutate "$kind" "$f")
  t0=$(jget "['t_done']" <<<"$j"); size=$(jget "['size']" <<<"$j"); off=$(jget "['offset']" <<<"$j")
  if ! drv "$s" rescan large large.bin 2>"$FAIL_FILE"; then
    m_fail "$run" "$s" "delta-$kind" "$size" "rescan command failed"; BROKEN[$s.large]="delta-$kind failed"; return 0
  fi
  tscan=$(now)
  tok=$(drv "$s" file_token large large.bin)
  if t1=$(drv "$s" wait_file large large.bin "$tok"); then
    m_end "$run" "$s" "delta-$kind" "$(fsub "$t1" "$t0")" "$size" ok \
      "change -> B has the new version; A rescan took $(fsub "$tscan" "$t0") s; offset=$off"
    row "$run" "$s" "delta-$kind-scanA" "$(fsub "$tscan" "$t0")" "$size" - - - - - - ok "explicit rescan of the file on A"
    verify "$d/A/large" "$d/B/large" "$s" "delta-$kind" "$run" || BROKEN[$s.large]="delta-$kind content differs"
  else
    m_fail "$run" "$s" "delta-$kind" "$size" "B did not get the new version in ${PHASE_TIMEOUT_S}s"
    BROKEN[$s.large]="delta-$kind failed"
  fi
}
mutate() {  # KIND FILE -> gen-dataset JSON (same mutation for every system)
  if [[ $1 == modify ]]; then
    "$PY" "$GEN" --seed "$SEED" modify "$2" --length 1MiB
  else
    "$PY" "$GEN" --seed "$SEED" insert "$2" --length 100
  fi
}

# --- the machine's limits ---------------------------------------------------------
CRYPTO_BIN=""
bench_limits() {  # RUN
  local run=$1 d=$WORK/run$1/limits f=$WORK/run$1/src/large/large.bin t0 t1 name msg total secs msg_name
  mkdir -p "$d"
  if [[ -z $CRYPTO_BIN ]]; then
    CRYPTO_BIN=$WORK/compare_crypto
    # shellcheck disable=SC2046
    cc -O2 -o "$CRYPTO_BIN" "$HERE/compare_crypto.c" $(pkg-config --cflags --libs libsodium) \
      || { log "cannot build compare_crypto.c (libsodium-dev, pkg-config?)"; CRYPTO_BIN=none; }
  fi
  if [[ $CRYPTO_BIN != none ]]; then
    "$CRYPTO_BIN" 256 >"$d/crypto.txt"
    while read -r name msg total secs _; do
      [[ $total != 0 ]] || continue
      if ((msg % 1024 == 0)); then msg_name="$((msg / 1024))KiB"; else msg_name="${msg}B"; fi
      row "$run" machine "limit-$name-$msg_name" "$secs" "$total" - - - - - - ok \
        "libsodium, $msg-byte messages, 1 core, best of 3 over 256 MiB"
    done <"$d/crypto.txt"
  fi
  cat "$f" >/dev/null
  t0=$(now); cat "$f" >/dev/null; t1=$(now)
  row "$run" machine limit-read-pagecache "$(fsub "$t1" "$t0")" "${BYTES[large]}" - - - - - - ok "cat of the large file, hot page cache"
  settle
  t0=$(now); dd if="$f" of="$d/copy.bin" bs=4M conv=fsync status=none; t1=$(now)
  row "$run" machine limit-copy-fsync "$(fsub "$t1" "$t0")" "${BYTES[large]}" - - - - - - ok "dd bs=4M conv=fsync of the large file (source in page cache)"
  rm -rf "$d"
}

# --- one run --------------------------------------------------------------------------
SYS_ALL=()
[[ $DO_SHOAL == 1 ]] && SYS_ALL+=(shoal)
[[ $DO_SYNCTHING == 1 ]] && SYS_ALL+=(syncthing)
[[ $DO_RSYNC == 1 ]] && SYS_ALL+=(rsync)

run_one() {
  local run=$1 d=$WORK/run$1 j s i n=${#SYS_ALL[@]} order=() kind
  for ((i = 0; i < n; i++)); do order+=("${SYS_ALL[$(((i + run - 1) % n))]}"); done
  log "=== run $run of $RUNS: order ${order[*]}"
  rm -rf "$d"; mkdir -p "$d/src"
  BROKEN=()
  j=$("$PY" "$GEN" --seed "$SEED" small "$d/src/small" --files "$SMALL_FILES" --dirs "$SMALL_DIRS")
  echo "$j" >>"$LOG"
  FILES[small]=$(jget "['files']" <<<"$j"); BYTES[small]=$(jget "['bytes']" <<<"$j")
  ITEMS[small]=$(find "$d/src/small" -mindepth 1 | wc -l)
  j=$("$PY" "$GEN" --seed "$SEED" large "$d/src/large" --size "$LARGE_SIZE")
  echo "$j" >>"$LOG"
  FILES[large]=1; ITEMS[large]=1; BYTES[large]=$(jget "['bytes']" <<<"$j")
  for s in "${order[@]}"; do
    if [[ $s == rsync ]]; then
      mkdir -p "$d/rsync/src" "$d/rsync/dst"; cp -a "$d/src/small" "$d/src/large" "$d/rsync/src/"
    else
      mkdir -p "$d/$s/A" "$d/$s/B"; cp -a "$d/src/small" "$d/src/large" "$d/$s/A/"
    fi
  done
  settle 2
  for s in "${order[@]}"; do
    [[ $s == rsync ]] && continue
    drv "$s" start "$d/$s"
  done
  sleep 2
  for s in "${order[@]}"; do
    [[ $s == rsync ]] && continue
    row "$run" "$s" idle-after-start - - - - "$(proc_cpu "${PID_A[$s]}")" "$(proc_cpu "${PID_B[$s]}")" \
      "$(proc_rss_mib "${PID_A[$s]}")" "$(proc_rss_mib "${PID_B[$s]}")" ok "RSS now (not a peak); cpu since start"
  done

  for s in "${order[@]}"; do ph_scanA "$run" "$s" small; done
  for s in "${order[@]}"; do ph_sync "$run" "$s" small; done
  for ((i = 1; i <= RESCAN_REPS; i++)); do
    for s in "${order[@]}"; do ph_rescan "$run" "$s" "$i"; done
  done
  if [[ $DO_LATENCY == 1 ]]; then
    for ((i = 1; i <= LAT_REPS; i++)); do
      for s in "${order[@]}"; do ph_latency "$run" "$s" "$i"; done
    done
  fi
  for s in "${order[@]}"; do ph_scanA "$run" "$s" large; done
  for s in "${order[@]}"; do ph_sync "$run" "$s" large; done
  for kind in modify insert; do
    for s in "${order[@]}"; do ph_delta "$run" "$s" "$kind"; done
  done

  for s in "${order[@]}"; do
    [[ $s == rsync ]] && continue
    drv "$s" stop
  done
  [[ $DO_LIMITS == 1 ]] && bench_limits "$run"
  # Delete only the few large files now; the small trees (tens of thousands
  # of inodes) stay until the end. On ext4 without a journal (this box),
  # creating files shortly after many deletions makes the kernel scan the
  # recently freed inodes (ext4 recently_deleted(), up to 6 min), which
  # would slow down the next run's small-sync of whichever system comes first.
  find "$d" -type f -size +64M -delete
  log "=== run $run done"
}

# --- main -------------------------------------------------------------------------------
{
  echo "date: $(date -Is)"
  echo "host: $(uname -srm); debian $(cat /etc/debian_version 2>/dev/null)"
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p') x $(nproc); flags: $(grep -o -w -E 'sha_ni|aes|avx2|avx512f' /proc/cpuinfo | sort -u | tr '\n' ' ')"
  echo "mem: $(free -g | awk '/Mem/{print $2" GiB"}'); fs of $WORK: $(df -T "$WORK" | awk 'NR==2{print $1" "$2}')"
  echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg); nice: $(nice)"
  if [[ $DO_SHOAL == 1 ]]; then
    echo "shoal: $("$SHOAL_BIN" --version 2>&1 | head -n 1); binary $SHOAL_BIN built $(date -r "$SHOAL_BIN" -Is)${SHOAL_REV:+ from $SHOAL_REV}; checkout $REPO at $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo ?)$(git -C "$REPO" diff --quiet HEAD -- agent crypto proto store 2>/dev/null || echo ' + uncommitted changes in the sources')"
  fi
  [[ $DO_SYNCTHING == 1 ]] && echo "syncthing: $("$ST_BIN" --version)"
  [[ $DO_RSYNC == 1 ]] && echo "rsync: $(rsync --version | head -n 1)"
  echo "libsodium: $(pkg-config --modversion libsodium 2>/dev/null || echo ?)"
  echo "netns: links $(ip -o link show | awk -F': ' '{print $2}' | tr '\n' ' ')"
  echo "params: RUNS=$RUNS SEED=$SEED SMALL_FILES=$SMALL_FILES SMALL_DIRS=$SMALL_DIRS LARGE_SIZE=$LARGE_SIZE systems='${SYS_ALL[*]}' LAT_REPS=$LAT_REPS RESCAN_REPS=$RESCAN_REPS POLL_S=$POLL_S LAT_POLL_S=$LAT_POLL_S ST_WATCH_DELAY_S=$ST_WATCH_DELAY_S ST_LOW_PRIORITY=$ST_LOW_PRIORITY PHASE_TIMEOUT_S=$PHASE_TIMEOUT_S"
} >"$RESULTS_DIR/env.txt"
cat "$RESULTS_DIR/env.txt" >>"$LOG"
log "results -> $RESULTS_DIR (work in $WORK)"

for ((r = 1; r <= RUNS; r++)); do
  CUR_RUN=$r
  run_one "$r"
done

echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$RESULTS_DIR/env.txt"
"$PY" "$HERE/compare_summary.py" "$RAW" "$RESULTS_DIR/summary.md" "$RESULTS_DIR/env.txt" | tee -a "$LOG"
log "done: $RESULTS_DIR/summary.md"
