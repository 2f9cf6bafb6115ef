#!/usr/bin/env bash
# =============================================================================
# tests/bench/scale.sh [WORKDIR] - the million-file benchmark (issue 6).
# Not a test: it prints figures. For each N of SCALE_COUNTS (default
# "10000 100000 1000000") it generates N tiny files (0-64 bytes, deterministic,
# in ceil(N/1000) leaf directories, see scale_helper.py gen) and measures, with
# two fresh agents A (send-only) and B (receive-only) over 127.0.0.1:
#   index   folder added on A -> A idle with every item indexed
#   sync    A shares, B accepts -> B idle, nothing needed, every item present;
#           B's tree is compared with A's afterwards (count + SHA-256, untimed);
#           meanwhile `shoal status` is asked of B back to back (see rescan)
#   ls      `shoal --home A ls FOLDER --limit 500 --json`: the first page and a
#           page from the middle (--cursor), median of LS_REPS runs of the CLI
#           process (ls reads LMDB itself, read-only, next to the running
#           agent); the start-up baseline is `shoal --version`
#   status  `shoal --home A status --json` (median of LS_REPS)
#   rescan  `shoal --home A scan FOLDER --wait` of the unchanged tree (median
#           of RESCAN_REPS); meanwhile `shoal status` is asked back to back
#           (it is answered on A's event loop): its slowest answer shows how
#           long a rescan keeps the loop from peers and the CLI
#   edit    one file rewritten on A -> B has the new bytes (median of
#           EDIT_REPS, 1 s apart; the watcher, a scoped scan, the index
#           exchange and B's pull, in a folder of N files)
#   lmdb    size of A's and B's index.lmdb/data.mdb (allocated and apparent)
# For every timed phase: wall, CPU (utime+stime, all threads) and peak RSS
# (VmHWM, reset through /proc/PID/clear_refs at the phase start) of A and B.
#
# It runs in a private network namespace with only lo (unshare -n, plus a PID
# namespace with --kill-child when possible), like compare.sh; root or
# `unshare -r -n` is needed. A and B share an empty folder "hello" from the
# start so that they are connected before the first phase.
#
# Knobs: SCALE_COUNTS="10000 100000 1000000" SEED=1 LS_REPS=5 RESCAN_REPS=3 EDIT_REPS=5
#   POLL_S (status poll interval; default 0.1, 0.5 from 500k files)
#   PHASE_TIMEOUT_S=3600 KEEP_WORK=0 SHOAL_BIN=<repo>/build/agent/shoal
#   SCALE_PORT_A=22301 SCALE_PORT_B=22302
#   SCALE_NOFILE (unset: the agents get this shell's open-file limit; a number:
#   `ulimit -n` for them, to see what the exchange costs without the puller's
#   EMFILE failures, see docs/performance.md, "Scale")
#   RESULTS_DIR=/tmp/shoal-scale-results/<timestamp>
# Disk: about 4.5 KiB per file on ext4 (inode + a block; B holds a copy too),
# so about 9 GiB for 1M files on both sides; checked with df before each N.
# Output: RESULTS_DIR/table.md (the table), raw.tsv, bench.log, the agents' logs.
# =============================================================================
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SELF=$HERE/$(basename "${BASH_SOURCE[0]}")
REPO=$(cd "$HERE/../.." && pwd)

# shellcheck source=netns.sh
source "$HERE/netns.sh"
bench_netns SCALE_NETNS "$SELF" "$@"

SCALE_COUNTS=${SCALE_COUNTS:-10000 100000 1000000}
SEED=${SEED:-1}
LS_REPS=${LS_REPS:-5}
RESCAN_REPS=${RESCAN_REPS:-3}
EDIT_REPS=${EDIT_REPS:-5}
PHASE_TIMEOUT_S=${PHASE_TIMEOUT_S:-3600}
KEEP_WORK=${KEEP_WORK:-0}
SHOAL_BIN=${SHOAL_BIN:-$REPO/build/agent/shoal}
PORT_A=${SCALE_PORT_A:-22301}
PORT_B=${SCALE_PORT_B:-22302}
RESULTS_DIR=${RESULTS_DIR:-/tmp/shoal-scale-results/$(date +%Y%m%d-%H%M%S)}
PY=python3
HELPER=$HERE/scale_helper.py
CHELPER=$HERE/compare_helper.py
CLK_TCK=$(getconf CLK_TCK)
WORK=${1:-}

mkdir -p "$RESULTS_DIR"
LOG=$RESULTS_DIR/bench.log
RAW=$RESULTS_DIR/raw.tsv
printf 'N\tphase\twall_s\tcpu_A_s\tcpu_B_s\trss_A_MiB\trss_B_MiB\tnote\n' >"$RAW"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$LOG" >&2; }
die() { log "FATAL: $*"; exit 1; }
now() { date +%s.%N; }
fsub() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", a-b}'; }
jget() { "$PY" -c "import json,sys; d=json.load(sys.stdin); print(d$1)"; }

[[ -x $SHOAL_BIN ]] || die "no shoal binary at $SHOAL_BIN (cmake -S . -B build && cmake --build build)"
if [[ -n ${SCALE_NOFILE:-} ]]; then
  (ulimit -n "$SCALE_NOFILE") 2>/dev/null \
    || die "cannot set the open-file limit to $SCALE_NOFILE (hard limit: $(ulimit -Hn))"
fi
if [[ -z $WORK ]]; then WORK=$(mktemp -d /tmp/shoal-scale-work.XXXXXX); fi
mkdir -p "$WORK"

proc_cpu() {
  [[ -n ${1:-} && -r /proc/$1/stat ]] || { echo NA; return; }
  sed -E 's/^.*\) //' "/proc/$1/stat" | awk -v t="$CLK_TCK" '{printf "%.2f", ($12+$13)/t}'
}
proc_hwm_mib() { [[ -n ${1:-} && -r /proc/$1/status ]] && awk '/^VmHWM/{printf "%.1f", $2/1024}' "/proc/$1/status" || echo NA; }
proc_rss_split() {
  [[ -n ${1:-} && -r /proc/$1/status ]] || { echo NA; return; }
  awk '/^RssAnon/{a=$2} /^RssFile/{f=$2} END{printf "%.1f/%.1f", a/1024, f/1024}' "/proc/$1/status"
}
proc_reset_hwm() { [[ -n ${1:-} ]] && { echo 5 >"/proc/$1/clear_refs"; } 2>/dev/null || true; }
csub() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a=="NA"||b=="NA") print "NA"; else printf "%.2f", a-b }'; }

BG_PIDS=()
PID_A="" PID_B=""
stop_pid() {
  local p=$1 grace=${2:-20} i
  kill -TERM "$p" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
  wait "$p" 2>/dev/null || true
}
cleanup() {
  local rc=$? p
  set +e
  for p in "${BG_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && stop_pid "$p" 5; done
  if [[ $KEEP_WORK != 1 && -n $WORK && $WORK != / ]]; then rm -rf "$WORK"; fi
  log "cleanup done (rc=$rc)"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

declare -A HOME_=() ID=()
cli() { local w=$1; shift; "$SHOAL_BIN" --home "${HOME_[$w]}" "$@"; }

start_agents() {  # DIR
  local d=$1 w port
  for w in A B; do
    HOME_[$w]=$d/home-$w
    ID[$w]=$(cli "$w" init --name "$w" | sed '/^[[:space:]]*$/d' | tail -n 1 | tr -d '[:space:]')
    [[ ${ID[$w]} =~ ^[A-Z2-7-]{63}$ ]] || die "shoal init $w printed no device ID: ${ID[$w]}"
  done
  cli A device add "${ID[B]}" --name B --addr "127.0.0.1:$PORT_B" >/dev/null
  cli B device add "${ID[A]}" --name A --addr "127.0.0.1:$PORT_A" >/dev/null
  cli A folder add hello "$d/hello-A" --mode send >/dev/null
  cli A folder share hello "${ID[B]}" >/dev/null
  cli B folder add hello "$d/hello-B" --mode receive >/dev/null
  cli B folder share hello "${ID[A]}" >/dev/null
  for w in A B; do
    port=$PORT_A; [[ $w == B ]] && port=$PORT_B
    mkdir -p "$d/user-$w"
    (
      [[ -z ${SCALE_NOFILE:-} ]] || ulimit -n "$SCALE_NOFILE"
      exec env HOME="$d/user-$w" "$SHOAL_BIN" --home "${HOME_[$w]}" run \
        --listen "127.0.0.1:$port" --no-mdns </dev/null >>"$d/shoal-$w.log" 2>&1
    ) &
    if [[ $w == A ]]; then PID_A=$!; else PID_B=$!; fi
    BG_PIDS+=("$!")
  done
  WATCH_PIDS="$PID_A $PID_B"; export WATCH_PIDS
  "$PY" "$CHELPER" sh-wait-connected "$SHOAL_BIN" "${HOME_[A]}" "${ID[B]}" 60 >>"$LOG" \
    || die "A and B did not connect (see $d/shoal-A.log)"
}
stop_agents() {
  local d=$1 w
  [[ -n $PID_A ]] && stop_pid "$PID_A"
  [[ -n $PID_B ]] && stop_pid "$PID_B"
  for w in A B; do cp "$d/shoal-$w.log" "$RESULTS_DIR/shoal-$w-$N.log" 2>/dev/null || true; done
  PID_A="" PID_B=""
}

M_CPU_A0=0 M_CPU_B0=0 SAMPLER=""
m_begin() {
  local i
  M_CPU_A0=$(proc_cpu "$PID_A"); M_CPU_B0=$(proc_cpu "$PID_B")
  proc_reset_hwm "$PID_A"; proc_reset_hwm "$PID_B"
  rm -f "$WORK/rss-peak"
  "$PY" "$HELPER" rss-peak "$WORK/rss-peak" "$PID_A" "$PID_B" &
  SAMPLER=$!; BG_PIDS+=("$SAMPLER")
  # The first sample before the phase starts (a short phase ended before it once).
  for ((i = 0; i < 100; i++)); do [[ -e $WORK/rss-peak ]] && break; sleep 0.02; done
}
# m_end PHASE WALL NOTE: one raw row; sets R_* for the table.
m_end() {
  R_CPU_A=$(csub "$(proc_cpu "$PID_A")" "$M_CPU_A0")
  R_CPU_B=$(csub "$(proc_cpu "$PID_B")" "$M_CPU_B0")
  R_RSS_A=$(proc_hwm_mib "$PID_A"); R_RSS_B=$(proc_hwm_mib "$PID_B")
  local pk="" a1 f1 a2 f2
  if [[ -n $SAMPLER ]]; then
    kill "$SAMPLER" 2>/dev/null; wait "$SAMPLER" 2>/dev/null || true; SAMPLER=""
    read -r a1 f1 a2 f2 <"$WORK/rss-peak" 2>/dev/null || true
    pk="sampled peak anon/file MiB A=${a1:-?}/${f1:-?} B=${a2:-?}/${f2:-?}"
    R_RSS_A="$R_RSS_A (anon ${a1:-?})"; R_RSS_B="$R_RSS_B (anon ${a2:-?})"
  fi
  local note="${3:--}; $pk; RSS now anon/file MiB A=$(proc_rss_split "$PID_A") B=$(proc_rss_split "$PID_B")"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$N" "$1" "$2" "$R_CPU_A" "$R_CPU_B" "$R_RSS_A" "$R_RSS_B" "$note" >>"$RAW"
  log "  N=$N $1: wall=$2 s cpuA=$R_CPU_A cpuB=$R_CPU_B rssA=$R_RSS_A rssB=$R_RSS_B MiB; $note"
}

wait_status() {  # W FOLDER ITEMS BYTES POLL -> epoch s of done
  local j
  j=$("$PY" "$CHELPER" sh-wait-status "$SHOAL_BIN" "${HOME_[$1]}" "$2" "$3" "$4" "$PHASE_TIMEOUT_S" "$5") \
    || { log "  wait on $1 failed: $j"; return 1; }
  jget "['t_done']" <<<"$j"
}

TABLE=$RESULTS_DIR/table.md
{
  echo "| files | phase | wall | CPU A s | CPU B s | peak RSS A MiB | peak RSS B MiB | note |"
  echo "|---|---|---|---|---|---|---|---|"
} >"$TABLE"
trow() { echo "| $N | $1 | $2 | $3 | $4 | $5 | $6 | $7 |" >>"$TABLE"; }

{
  echo "shoal: $SHOAL_BIN ($("$SHOAL_BIN" --version 2>&1 | head -n 1)); git: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo ?)"
  echo "counts: $SCALE_COUNTS; seed $SEED; cpus $(nproc); load: $(cut -d' ' -f1-3 /proc/loadavg); open files: ${SCALE_NOFILE:-$(ulimit -n)}"
} | tee -a "$LOG"

for N in $SCALE_COUNTS; do
  D=$WORK/n$N
  rm -rf "$D"; mkdir -p "$D"
  need_kib=$((N * 10))
  avail_kib=$(df -Pk "$WORK" | awk 'NR==2{print $4}')
  [[ $avail_kib -gt $need_kib ]] || die "not enough space in $WORK for N=$N: $avail_kib KiB free, want $need_kib"
  POLL=${POLL_S:-0.1}
  [[ -z ${POLL_S:-} && $N -ge 500000 ]] && POLL=0.5
  log "N=$N: generating"
  t0=$(now)
  G=$("$PY" "$HELPER" gen "$D/A" "$N" "$SEED")
  ITEMS=$(jget "['items']" <<<"$G"); BYTES=$(jget "['bytes']" <<<"$G"); MID=$(jget "['mid']" <<<"$G")
  log "N=$N: generated $ITEMS items, $BYTES bytes in $(fsub "$(now)" "$t0") s; mid cursor $MID"
  sync
  start_agents "$D"

  # --- index build on A
  sync; sleep 1
  m_begin; t0=$(now)
  cli A folder add big "$D/A" --mode send >>"$LOG"
  if t1=$(wait_status A big "$ITEMS" "$BYTES" "$POLL"); then
    w=$(fsub "$t1" "$t0"); m_end index "$w" "$ITEMS items"
    trow "index build (A)" "$w s" "$R_CPU_A" "$R_CPU_B" "$R_RSS_A" "$R_RSS_B" "$ITEMS items"
  else
    m_end index FAIL "A did not finish indexing"; trow "index build (A)" FAIL - - "$R_RSS_A" - "see bench.log"
    stop_agents "$D"; continue
  fi

  # --- exchange: B syncs from A
  sync; sleep 1
  m_begin; t0=$(now)
  cli A folder share big "${ID[B]}" >>"$LOG"
  cli B folder add big "$D/B" --mode receive >>"$LOG"
  cli B folder share big "${ID[A]}" >>"$LOG"
  rm -f "$WORK/stall" "$WORK/stall.stop"
  "$PY" "$HELPER" stall-probe "$WORK/stall" "$SHOAL_BIN" "${HOME_[B]}" &
  probe=$!; BG_PIDS+=("$probe")
  if t1=$(wait_status B big "$ITEMS" "$BYTES" "$POLL"); then
    touch "$WORK/stall.stop"; wait "$probe" || true
    stall=$(cat "$WORK/stall" 2>/dev/null || echo '{}')
    w=$(fsub "$t1" "$t0"); m_end sync "$w" "B has $ITEMS items; B's status meanwhile: $stall"
    sa=$("$PY" "$HELPER" tree-sum "$D/A"); sb=$("$PY" "$HELPER" tree-sum "$D/B")
    if [[ $(jget "['sha256']" <<<"$sa") == "$(jget "['sha256']" <<<"$sb")" ]]; then
      verdict="B identical to A ($(jget "['files']" <<<"$sb") files)"
    else
      verdict="B DIFFERS from A: A $sa, B $sb"
    fi
    log "  $verdict"
    trow "exchange (B syncs)" "$w s" "$R_CPU_A" "$R_CPU_B" "$R_RSS_A" "$R_RSS_B" "$verdict"
    trow "status during the exchange" "$(jget "['max_ms']" <<<"$stall") ms slowest" - - - - "median $(jget "['median_ms']" <<<"$stall") ms of $(jget "['n']" <<<"$stall") (answered on B's event loop)"
  else
    touch "$WORK/stall.stop"; wait "$probe" || true
    m_end sync FAIL "B did not sync"; trow "exchange (B syncs)" FAIL - - "$R_RSS_A" "$R_RSS_B" "see bench.log"
  fi

  # --- listing on A (the CLI reads LMDB read-only; the agent keeps running)
  base=$("$PY" "$HELPER" cli-time "$LS_REPS" "$SHOAL_BIN" --version)
  l1=$("$PY" "$HELPER" ls-time "$SHOAL_BIN" "${HOME_[A]}" big 500 "$LS_REPS")
  l2=$("$PY" "$HELPER" ls-time "$SHOAL_BIN" "${HOME_[A]}" big 500 "$LS_REPS" "$MID")
  lb=$("$PY" "$HELPER" ls-time "$SHOAL_BIN" "${HOME_[B]}" big 500 "$LS_REPS" "$MID")
  log "  ls: start-up $base; first $l1; middle $l2; middle on B $lb"
  printf '%s\tls\t-\t-\t-\t-\t-\tbaseline %s first %s middle %s middle-B %s\n' "$N" "$base" "$l1" "$l2" "$lb" >>"$RAW"
  fmt_ls() { "$PY" -c "import json,sys; d=json.loads(sys.argv[1]); print('%s ms CLI, %d items' % (d['wall_ms'], d['items']))" "$1"; }
  trow "ls page 1 (500)" "$(fmt_ls "$l1")" - - - - "CLI start-up (shoal --version): $(jget "['wall_ms']" <<<"$base") ms"
  trow "ls middle page" "$(fmt_ls "$l2")" - - - - "B: $(fmt_ls "$lb")"
  st=$("$PY" "$HELPER" cli-time "$LS_REPS" "$SHOAL_BIN" --home "${HOME_[A]}" status --json)
  trow "status --json" "$(jget "['wall_ms']" <<<"$st") ms" - - - - "CLI wall, median of $LS_REPS"

  # --- no-change rescan on A
  walls=()
  m_begin
  rm -f "$WORK/stall" "$WORK/stall.stop"
  "$PY" "$HELPER" stall-probe "$WORK/stall" "$SHOAL_BIN" "${HOME_[A]}" &
  probe=$!; BG_PIDS+=("$probe")
  for ((r = 0; r < RESCAN_REPS; r++)); do
    t0=$(now); cli A scan big --wait >/dev/null; walls+=("$(fsub "$(now)" "$t0")")
  done
  touch "$WORK/stall.stop"; wait "$probe" || true
  stall=$(cat "$WORK/stall" 2>/dev/null || echo '{}')
  med=$(printf '%s\n' "${walls[@]}" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
  m_end rescan "$med" "no-change rescan x$RESCAN_REPS: ${walls[*]}; status meanwhile: $stall"
  trow "no-change rescan" "$med s" "$R_CPU_A" "$R_CPU_B" "$R_RSS_A" "$R_RSS_B" "median of $RESCAN_REPS (${walls[*]}); CPU for all"
  trow "status during the rescans" "$(jget "['max_ms']" <<<"$stall") ms slowest" - - - - "median $(jget "['median_ms']" <<<"$stall") ms of $(jget "['n']" <<<"$stall") (answered on A's event loop)"

  # --- one edit on A -> B
  m_begin
  ef=g00/d00000/f0000000
  if e=$("$PY" "$HELPER" edit-latency "$D/A/$ef" "$D/B/$ef" "$EDIT_REPS"); then
    m_end edit "$(jget "['median_ms']" <<<"$e")" "edit latency ms: $e"
    trow "one edit A -> B" "$(jget "['median_ms']" <<<"$e") ms" "$R_CPU_A" "$R_CPU_B" "$R_RSS_A" "$R_RSS_B" "median of $EDIT_REPS, slowest $(jget "['max_ms']" <<<"$e") ms; CPU for all"
  else
    m_end edit FAIL "$e"; trow "one edit A -> B" FAIL - - - - "$e"
  fi

  # --- LMDB sizes
  sz() { echo "$(du -k "$1" | awk '{printf "%.0f", $1/1024}') MiB used / $(stat -c %s "$1" | awk '{printf "%.0f", $1/1048576}') MiB apparent"; }
  lm="A $(sz "${HOME_[A]}/index.lmdb/data.mdb"); B $(sz "${HOME_[B]}/index.lmdb/data.mdb")"
  log "  lmdb: $lm"
  trow "LMDB data.mdb" "-" - - - - "$lm"
  trow "idle RSS now (anon/file MiB)" "-" - - - - "A $(proc_rss_split "$PID_A"), B $(proc_rss_split "$PID_B")"

  stop_agents "$D"
  if [[ $KEEP_WORK != 1 ]]; then log "N=$N: removing the trees"; rm -rf "$D"; fi
done

log "done; table in $TABLE"
cat "$TABLE"
