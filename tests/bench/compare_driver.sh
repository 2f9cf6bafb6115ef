# shellcheck shell=bash
# tests/bench/compare_driver.sh - the three systems measured by compare.sh.
# Sourced by compare.sh (needs its globals: SHOAL_BIN, ST_BIN, PY, HELPER,
# RESULTS_DIR, PHASE_TIMEOUT_S, POLL_S, FAIL_FILE, BG_PIDS, log, die, H).
#
# A sync system SYS (shoal, syncthing) provides, A = sender, B = receiver:
#   SYS_start RUNDIR            start A and B on 127.0.0.1, connect them; set
#                               PID_A[SYS] PID_B[SYS] PORT_A[SYS] PORT_B[SYS]
#   SYS_add_sender ID PATH      folder on A (send-only), not shared yet
#   SYS_wait_scanned ID FILES ITEMS BYTES   until A has indexed it; prints epoch s
#   SYS_share ID PATH_B         A offers the folder to B, B accepts it (receive-only)
#   SYS_wait_synced ID FILES ITEMS BYTES    until B is complete; prints epoch s
#   SYS_rescan ID [REL]         blocking rescan on A (whole folder or one path)
#   SYS_file_token ID REL       A's version of REL (after the rescan)
#   SYS_wait_file ID REL TOKEN  until B has that version, idle; prints epoch s
#   SYS_wire_in_bytes           B's cumulative bytes received from A
#   SYS_latency_gap             idle seconds before each latency probe
#   SYS_mark / SYS_anomalies    log position / short note on errors since then
#   SYS_fail_reason             last error lines of the logs (for failed phases)
#   SYS_last_words              last lines of both logs (when an agent exited)
#   SYS_stop                    stop A and B (by PID), keep the logs
# The wait functions print the helper's JSON to FAIL_FILE and return 1 on
# timeout. FILES counts regular files, ITEMS files + directories.
# rsync has no agents: rsync_measure (below) runs one transfer to a daemon.

# ------------------------------------------------------------------ shoal
declare -A SH_HOME=() SH_ID=() SH_PATH_A=() SH_PATH_B=() SH_MARK=()
SH_RUNDIR=""

shoal_cli() { local w=$1; shift; "$SHOAL_BIN" --home "${SH_HOME[$w]}" "$@"; }

shoal_start() {
  local d=$1 w
  SH_RUNDIR=$d
  PORT_A["shoal"]=$SHOAL_PORT_A; PORT_B["shoal"]=$SHOAL_PORT_B
  for w in A B; do
    SH_HOME[$w]=$d/shoal-home-$w
    SH_ID[$w]=$(shoal_cli "$w" init --name "$w" | sed '/^[[:space:]]*$/d' | tail -n 1 | tr -d '[:space:]')
    [[ ${SH_ID[$w]} =~ ^[A-Z2-7-]{63}$ ]] || die "shoal init $w printed no device ID: ${SH_ID[$w]}"
  done
  shoal_cli A device add "${SH_ID[B]}" --name B --addr "127.0.0.1:$SHOAL_PORT_B" >/dev/null
  shoal_cli B device add "${SH_ID[A]}" --name A --addr "127.0.0.1:$SHOAL_PORT_A" >/dev/null
  # shoal connects only to devices it shares a folder with. An empty folder
  # "hello", shared before the first start, gets A and B connected up front
  # (as Syncthing is before its first share) and keeps shoal from creating its
  # "default" folder at ~/Shoal.
  shoal_cli A folder add hello "$d/hello-A" --mode send >/dev/null
  shoal_cli A folder share hello "${SH_ID[B]}" >/dev/null
  shoal_cli B folder add hello "$d/hello-B" --mode receive >/dev/null
  shoal_cli B folder share hello "${SH_ID[A]}" >/dev/null
  for w in A B; do
    local port=$SHOAL_PORT_A; [[ $w == B ]] && port=$SHOAL_PORT_B
    # HOME inside the run directory, in case anything is created there.
    mkdir -p "$d/shoal-user-$w"
    env HOME="$d/shoal-user-$w" "$SHOAL_BIN" --home "${SH_HOME[$w]}" run \
      --listen "127.0.0.1:$port" --no-mdns </dev/null >>"$d/shoal-$w.log" 2>&1 &
    if [[ $w == A ]]; then PID_A["shoal"]=$!; else PID_B["shoal"]=$!; fi
    BG_PIDS+=("$!")
  done
  H sh-wait-connected "$SHOAL_BIN" "${SH_HOME[A]}" "${SH_ID[B]}" 60 >>"$LOG" \
    || die "shoal A and B did not connect (see $d/shoal-A.log)"
  H sh-wait-connected "$SHOAL_BIN" "${SH_HOME[B]}" "${SH_ID[A]}" 30 >>"$LOG" \
    || die "shoal B does not see A"
  log "shoal: A pid ${PID_A["shoal"]} id ${SH_ID[A]}, B pid ${PID_B["shoal"]} id ${SH_ID[B]}"
  { echo "# sockets after shoal connect (A=${PID_A["shoal"]} B=${PID_B["shoal"]})"; ss -tunapH; } >>"$RESULTS_DIR/sockets.txt"
}
shoal_add_sender() {
  SH_PATH_A[$1]=$2
  shoal_cli A folder add "$1" "$2" --mode send >>"$LOG"
}
shoal_wait_scanned() {
  local j
  j=$(H sh-wait-status "$SHOAL_BIN" "${SH_HOME[A]}" "$1" "$3" "$4" "$PHASE_TIMEOUT_S" "$POLL_S") \
    || { echo "A scan: $j" >"$FAIL_FILE"; return 1; }
  jget "['t_done']" <<<"$j"
}
shoal_share() {
  SH_PATH_B[$1]=$2
  shoal_cli A folder share "$1" "${SH_ID[B]}" >>"$LOG"
  shoal_cli B folder add "$1" "$2" --mode receive >>"$LOG"
  shoal_cli B folder share "$1" "${SH_ID[A]}" >>"$LOG"
}
shoal_wait_synced() {
  local j
  j=$(H sh-wait-status "$SHOAL_BIN" "${SH_HOME[B]}" "$1" "$3" "$4" "$PHASE_TIMEOUT_S" "$POLL_S") \
    || { echo "B sync: $j" >"$FAIL_FILE"; return 1; }
  jget "['t_done']" <<<"$j"
}
shoal_rescan() { shoal_cli A scan "$1" ${2:+"$2"} --wait >/dev/null; }
shoal_file_token() { H sh-file-token "${SH_PATH_A[$1]}/$2"; }
shoal_wait_file() {
  local j size mtime
  read -r size mtime <<<"$3"
  j=$(H sh-wait-file "$SHOAL_BIN" "${SH_HOME[B]}" "$1" "${SH_PATH_B[$1]}/$2" "$size" "$mtime" \
      "$PHASE_TIMEOUT_S" "$POLL_S") || { echo "B new version: $j" >"$FAIL_FILE"; return 1; }
  jget "['t_done']" <<<"$j"
}
shoal_wire_in_bytes() { H sh-wire "$SHOAL_BIN" "${SH_HOME[B]}" "${SH_ID[A]}"; }
shoal_latency_gap() { echo 1; }
shoal_mark() {
  SH_MARK[A]=$(wc -l <"$SH_RUNDIR/shoal-A.log"); SH_MARK[B]=$(wc -l <"$SH_RUNDIR/shoal-B.log")
}
shoal_since_mark() {
  tail -n +"$((SH_MARK[A] + 1))" "$SH_RUNDIR/shoal-A.log" | sed 's/^/A: /'
  tail -n +"$((SH_MARK[B] + 1))" "$SH_RUNDIR/shoal-B.log" | sed 's/^/B: /'
}
# shoal drops and redials the connection on purpose when a folder is shared
# ("folder shared", then "replaced by a newer connection" when both sides
# dialled): counted as reconnects, not as errors.
shoal_anomalies() {
  local n r
  n=$(shoal_since_mark | grep -c -E '^[AB]: (ERROR|WARN)' || true)
  r=$(shoal_since_mark | grep -c -E '^[AB]: INFO: disconnected' || true)
  [[ $n -gt 0 ]] && echo "$n shoal WARN/ERROR log lines"
  [[ $r -gt 0 ]] && echo "$r shoal disconnects ($(shoal_since_mark | sed -n 's/.*disconnected from [^:]*:[0-9]*): //p' | sort | uniq -c | awk '{c=$1; $1=""; printf "%s%s x%s", (NR>1?", ":""), substr($0,2), c}'))"
  return 0
}
shoal_fail_reason() {
  { shoal_since_mark | grep -E '^[AB]: (ERROR|WARN)|disconnected' | tail -n 3 | tr '\n' ' ' | cut -c1-400; } || true
}
shoal_last_words() {
  local w
  for w in A B; do
    { grep -E '^(ERROR|WARN)|stopping' "$SH_RUNDIR/shoal-$w.log" | tail -n 2 || tail -n 2 "$SH_RUNDIR/shoal-$w.log"; } | sed "s/^/$w: /"
  done | tr '\n' ' '
}
shoal_stop() {
  local w p
  # The event log (durable transfer events with timestamps, plus the ring of
  # the last 1024 events) for reading the run afterwards.
  for w in A B; do
    if [[ $w == A ]]; then p=${PID_A["shoal"]:-}; else p=${PID_B["shoal"]:-}; fi
    [[ -n $p ]] || continue
    timeout 3 "$SHOAL_BIN" --home "${SH_HOME[$w]}" events --since 0 --json \
      >"$RESULTS_DIR/shoal-$w-events-run${CUR_RUN:-x}.jsonl" 2>/dev/null || true
  done
  for w in A B; do
    if [[ $w == A ]]; then p=${PID_A["shoal"]:-}; else p=${PID_B["shoal"]:-}; fi
    [[ -n $p ]] && stop_pid "$p" 10
    [[ -n $SH_RUNDIR ]] && cp "$SH_RUNDIR/shoal-$w.log" "$RESULTS_DIR/shoal-$w-run${CUR_RUN:-x}.log" 2>/dev/null || true
  done
  PID_A["shoal"]=""; PID_B["shoal"]=""
  return 0
}

# -------------------------------------------------------------- Syncthing
# Configured exactly as the anchor harness does: every feature that talks to
# other hosts off in config.xml before the first start (st-config), checked
# over REST after start (st-check-options), devices at explicit loopback
# addresses, setLowPriority=false. Folders: A sendonly, B receiveonly,
# fsWatcherEnabled, rescanIntervalS=3600, fsWatcherDelayS=$ST_WATCH_DELAY_S
# on the small tree and 10 (the default) on the large file.
declare -A ST_PID=() ST_MON=() ST_ID=() ST_MARK=()
declare -A ST_GUI=([A]=$ST_GUI_PORT_A [B]=$ST_GUI_PORT_B)
declare -A ST_SYNC=([A]=$ST_SYNC_PORT_A [B]=$ST_SYNC_PORT_B)
declare -A ST_KEY=([A]=compare-bench-apikey-A [B]=compare-bench-apikey-B)
ST_RUNDIR=""

st_base() { echo "http://127.0.0.1:${ST_GUI[$1]}"; }
st_api() {  # A|B METHOD PATH [curl args]
  local w=$1 m=$2 p=$3; shift 3
  curl -sS -f --max-time "${ST_CURL_TIMEOUT:-$PHASE_TIMEOUT_S}" -X "$m" \
    -H "X-API-Key: ${ST_KEY[$w]}" "$(st_base "$w")$p" "$@"
}
syncthing_start() {
  local d=$1 w home i
  ST_RUNDIR=$d
  PORT_A["syncthing"]=${ST_SYNC[A]}; PORT_B["syncthing"]=${ST_SYNC[B]}
  for w in A B; do
    home=$d/st-home-$w
    STNODEFAULTFOLDER=1 "$ST_BIN" generate --home="$home" --no-default-folder >"$d/st-generate-$w.log" 2>&1
    ST_ID[$w]=$(sed -n 's/.*Device ID: *\([A-Z0-9-]*\).*/\1/p' "$d/st-generate-$w.log" | head -n 1)
    [[ -n ${ST_ID[$w]} ]] || die "could not read Syncthing device ID of $w"
    H st-config "$home/config.xml" "${ST_GUI[$w]}" "${ST_KEY[$w]}" "${ST_SYNC[$w]}" "$ST_LOW_PRIORITY"
    cp "$home/config.xml" "$RESULTS_DIR/syncthing-config-$w-initial.xml"
    STNODEFAULTFOLDER=1 STNOUPGRADE=1 STNORESTART=1 \
      "$ST_BIN" serve --home="$home" --no-browser --no-restart --no-upgrade --no-default-folder \
      --gui-address="http://127.0.0.1:${ST_GUI[$w]}" --gui-apikey="${ST_KEY[$w]}" \
      --logflags=3 >"$d/syncthing-$w.log" 2>&1 &
    ST_MON[$w]=$!   # Syncthing 1.19 always runs a monitor that forks the worker
    BG_PIDS+=("$!")
  done
  for w in A B; do
    for i in $(seq 1 300); do
      st_api "$w" GET /rest/system/ping >/dev/null 2>&1 && break
      kill -0 "${ST_MON[$w]}" 2>/dev/null || die "syncthing $w died (see $d/syncthing-$w.log)"
      sleep 0.1
    done
    ST_PID[$w]=$(ps -o pid= --ppid "${ST_MON[$w]}" | awk 'NR==1{print $1}')
    [[ -n ${ST_PID[$w]} ]] || die "no Syncthing worker under monitor ${ST_MON[$w]}"
    BG_PIDS+=("${ST_PID[$w]}")
    H st-check-options "$(st_base "$w")" "${ST_KEY[$w]}" "${ST_SYNC[$w]}" >>"$LOG" \
      || die "syncthing $w options not as required (see $LOG)"
  done
  st_api A POST /rest/config/devices -H 'Content-Type: application/json' \
    -d "{\"deviceID\":\"${ST_ID[B]}\",\"name\":\"B\",\"addresses\":[\"tcp://127.0.0.1:${ST_SYNC[B]}\"]}" >/dev/null
  st_api B POST /rest/config/devices -H 'Content-Type: application/json' \
    -d "{\"deviceID\":\"${ST_ID[A]}\",\"name\":\"A\",\"addresses\":[\"tcp://127.0.0.1:${ST_SYNC[A]}\"]}" >/dev/null
  H st-wait-connected "$(st_base A)" "${ST_KEY[A]}" "${ST_ID[B]}" 180 >>"$LOG" || die "Syncthing A and B did not connect"
  H st-wait-connected "$(st_base B)" "${ST_KEY[B]}" "${ST_ID[A]}" 60 >>"$LOG" || die "Syncthing B does not see A"
  PID_A["syncthing"]=${ST_PID[A]}; PID_B["syncthing"]=${ST_PID[B]}
  log "syncthing: A worker pid ${ST_PID[A]}, B worker pid ${ST_PID[B]}"
  { echo "# sockets after syncthing connect (A=${ST_PID[A]} B=${ST_PID[B]})"; ss -tunapH; } >>"$RESULTS_DIR/sockets.txt"
}
st_folder_json() {  # id path type devices...
  # The small tree (latency probe) gets ST_WATCH_DELAY_S; the large file keeps
  # Syncthing's default 10 s, as in the anchor, so the explicit rescan after a
  # delta mutation is what picks the change up (not a watcher scan mid-write).
  local id=$1 path=$2 type=$3 devs="" dv delay=10; shift 3
  [[ $id == small ]] && delay=$ST_WATCH_DELAY_S
  for dv in "$@"; do devs+="${devs:+,}{\"deviceID\":\"$dv\"}"; done
  printf '{"id":"%s","label":"%s","path":"%s","type":"%s","devices":[%s],"fsWatcherEnabled":true,"fsWatcherDelayS":%s,"rescanIntervalS":3600}' \
    "$id" "$id" "$path" "$type" "$devs" "$delay"
}
syncthing_add_sender() {
  st_api A POST /rest/config/folders -H 'Content-Type: application/json' \
    -d "$(st_folder_json "$1" "$2" sendonly "${ST_ID[A]}")" >/dev/null
}
syncthing_wait_scanned() {
  local j
  j=$(H st-wait-status "$(st_base A)" "${ST_KEY[A]}" "$1" "$2" "$4" "$PHASE_TIMEOUT_S" "$POLL_S") \
    || { echo "A scan: $j" >"$FAIL_FILE"; return 1; }
  jget "['t_done']" <<<"$j"
}
syncthing_share() {
  # A offers first, then B accepts (the order the anchor found reliable in 1.19).
  st_api A PATCH "/rest/config/folders/$1" -H 'Content-Type: application/json' \
    -d "{\"devices\":[{\"deviceID\":\"${ST_ID[A]}\"},{\"deviceID\":\"${ST_ID[B]}\"}]}" >/dev/null
  mkdir -p "$2"
  st_api B POST /rest/config/folders -H 'Content-Type: application/json' \
    -d "$(st_folder_json "$1" "$2" receiveonly "${ST_ID[B]}" "${ST_ID[A]}")" >/dev/null
}
syncthing_wait_synced() {
  local j
  j=$(H st-wait-status "$(st_base B)" "${ST_KEY[B]}" "$1" "$2" "$4" "$PHASE_TIMEOUT_S" "$POLL_S") \
    || { echo "B sync: $j" >"$FAIL_FILE"; return 1; }
  jget "['t_done']" <<<"$j"
}
syncthing_rescan() {
  local q="folder=$1"; [[ -n ${2:-} ]] && q+="&sub=$2"
  st_api A POST "/rest/db/scan?$q" >/dev/null
}
syncthing_file_token() { H st-file-version "$(st_base A)" "${ST_KEY[A]}" "$1" "$2"; }
syncthing_wait_file() {
  local j
  j=$(H st-wait-version "$(st_base B)" "${ST_KEY[B]}" "$1" "$2" "$3" "$PHASE_TIMEOUT_S" "$POLL_S") \
    || { echo "B new version: $j" >"$FAIL_FILE"; return 1; }
  jget "['t_done']" <<<"$j"
}
syncthing_wire_in_bytes() { H st-wire "$(st_base B)" "${ST_KEY[B]}"; }
syncthing_latency_gap() { echo $((2 * ST_WATCH_DELAY_S + 2)); }
syncthing_mark() {
  ST_MARK[A]=$(wc -l <"$ST_RUNDIR/syncthing-A.log"); ST_MARK[B]=$(wc -l <"$ST_RUNDIR/syncthing-B.log")
}
syncthing_since_mark() {
  tail -n +"$((ST_MARK[A] + 1))" "$ST_RUNDIR/syncthing-A.log" | sed 's/^/A: /'
  tail -n +"$((ST_MARK[B] + 1))" "$ST_RUNDIR/syncthing-B.log" | sed 's/^/B: /'
}
syncthing_anomalies() {
  local n
  n=$(syncthing_since_mark | grep -c -E 'closed:|Failed to exchange Hello|nonexistent|WARNING|pull.*fail' || true)
  [[ $n -gt 0 ]] && echo "$n syncthing log lines with reconnect/error"
  return 0
}
syncthing_fail_reason() {
  { syncthing_since_mark | grep -E 'WARNING|INFO: .*(fail|error)' | tail -n 3 | tr '\n' ' ' | cut -c1-400; } || true
}
syncthing_last_words() {
  { tail -n 2 "$ST_RUNDIR/syncthing-A.log" | sed 's/^/A: /'; tail -n 2 "$ST_RUNDIR/syncthing-B.log" | sed 's/^/B: /'; } | tr '\n' ' ' | cut -c1-500
}
syncthing_stop() {
  local w
  for w in A B; do
    [[ -n ${ST_MON[$w]:-} ]] || continue
    ST_CURL_TIMEOUT=10 st_api "$w" POST /rest/system/shutdown >/dev/null 2>&1 || true
  done
  for w in A B; do
    [[ -n ${ST_PID[$w]:-} ]] && stop_pid "${ST_PID[$w]}" 15
    [[ -n ${ST_MON[$w]:-} ]] && stop_pid "${ST_MON[$w]}" 15
    [[ -n $ST_RUNDIR ]] && cp "$ST_RUNDIR/syncthing-$w.log" "$RESULTS_DIR/syncthing-$w-run${CUR_RUN:-x}.log" 2>/dev/null || true
    ST_PID[$w]=""; ST_MON[$w]=""
  done
  PID_A["syncthing"]=""; PID_B["syncthing"]=""
  return 0
}

# ------------------------------------------------------------------ rsync
# One rsync client -> a fresh rsync daemon on 127.0.0.1 per measurement
# (plain TCP, no encryption), both under GNU time for CPU and peak RSS.
RSD_PID=""; RSD_TIME_PID=""
rsyncd_start() {  # DIR (holds dst/ and the daemon's files)
  local dir=$1
  cat >"$dir/rsyncd.conf" <<EOF
use chroot = no
max connections = 4
[dst]
  path = $dir/dst
  read only = false
  uid = $(id -u)
  gid = $(id -g)
EOF
  /usr/bin/time -f '%e %U %S %M' -o "$dir/rsyncd.time" \
    rsync --daemon --no-detach --address=127.0.0.1 --port="$RSYNC_PORT" \
    --config="$dir/rsyncd.conf" --log-file="$dir/rsyncd.log" &
  RSD_TIME_PID=$!; BG_PIDS+=("$RSD_TIME_PID")
  for _ in $(seq 1 100); do ss -tlnH "sport = :$RSYNC_PORT" | grep -q . && break; sleep 0.05; done
  RSD_PID=$(awk '{print $1}' "/proc/$RSD_TIME_PID/task/$RSD_TIME_PID/children")
  [[ -n $RSD_PID ]] || die "rsync daemon did not start"
}
rsyncd_stop() {
  sleep 0.3
  kill -TERM "$RSD_PID" 2>/dev/null || true
  wait "$RSD_TIME_PID" 2>/dev/null || true
  RSD_PID=""; RSD_TIME_PID=""
}
rsync_stat() { grep -E "^$1" "$2" | head -n 1 | sed -E 's/^[^:]*: *([0-9,]+).*/\1/; s/,//g'; }
# rsync_measure RUN PHASE PAYLOAD DIR rsync-args...: client -> daemon; one row.
rsync_measure() {
  local run=$1 phase=$2 payload=$3 dir=$4 t0 t1 cA cB rA rB sent lit mat st=ok note
  shift 4
  rsyncd_start "$dir"
  t0=$(now)
  if ! /usr/bin/time -f '%e %U %S %M' -o "$dir/client.time" rsync "$@" >"$dir/stats.txt" 2>&1; then
    st=FAIL
  fi
  t1=$(now)
  rsyncd_stop
  cA=$(tail -n 1 "$dir/client.time" | awk '{printf "%.2f", $2+$3}')
  rA=$(tail -n 1 "$dir/client.time" | awk '{printf "%.1f", $4/1024}')
  cB=$(tail -n 1 "$dir/rsyncd.time" | awk '{printf "%.2f", $2+$3}')
  rB=$(tail -n 1 "$dir/rsyncd.time" | awk '{printf "%.1f", $4/1024}')
  sent=$(rsync_stat "Total bytes sent" "$dir/stats.txt")
  lit=$(rsync_stat "Literal data" "$dir/stats.txt"); mat=$(rsync_stat "Matched data" "$dir/stats.txt")
  cat "$dir/stats.txt" >>"$RESULTS_DIR/rsync-stats-run$run.txt"
  note="rsync daemon; literal=${lit:-NA} matched=${mat:-NA}; rsync ${*:1:$(($# - 2))}"
  [[ $st == ok ]] || note="FAILED: $(tail -n 2 "$dir/stats.txt" | tr '\n' ' '); $note"
  row "$run" rsync "$phase" "$(fsub "$t1" "$t0")" "$payload" "${sent:-NA}" - "$cA" "$cB" "$rA" "$rB" "$st" "$note"
  [[ $st == ok ]]
}
