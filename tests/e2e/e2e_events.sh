#!/usr/bin/env bash
# `shoal events` shows a transfer as it happens: a client that reads the
# stream while B pulls a 32 MiB file sees transfer_started, progress with
# bytes done and total, item_finished and transfer_completed, in sequence
# order; `--since` replays the durable events after a restart of B.
# Also checks `shoal scan --wait` and `shoal ls` paging with a cursor.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
e2e_begin e2e_events "$@"

FOLDER=ev
node_new A
node_new B
pair A B
share_one_way A B "$FOLDER"
a=${NODE_DIR[A]} b=${NODE_DIR[B]}
for i in $(seq 1 12); do echo "file $i" >"$a/small-$i.txt"; done

start_agent A
start_agent B
wait_listening A
wait_listening B
wait_synced --files 12 --peer A B "$FOLDER"

events=$E2E_TMP/events.jsonl
"$SHOAL_BIN" --home "${NODE_HOME[B]}" events --json >"$events" 2>"$E2E_TMP/events.err" &
ev_pid=$!
EXTRA_PIDS+=("$ev_pid")
sleep 0.5
head -c $((32 << 20)) /dev/urandom >"$a/big.bin"
# No waiting for the watcher: scan --wait returns once A has recorded it.
shoal_ok A scan "$FOLDER" big.bin --wait >/dev/null
wait_for "cmp -s '$a/big.bin' '$b/big.bin'" 60 || fail "B did not receive big.bin"
wait_for "grep -q '\"transfer_completed\"' '$events'" 10 || fail "no transfer_completed event"
stop_pid "$ev_pid" 2 || true

python3 - "$events" <<'PY'
import json, sys
evs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
seqs = [e["seq"] for e in evs]
assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), "sequence numbers not increasing"
# The stream starts with what the ring still holds (the first, small sync):
# look at the big file's transfer.
start = max(i for i, e in enumerate(evs) if e["type"] == "transfer_started" and e["bytes"] >= 32 << 20)
evs = evs[start:]
types = [e["type"] for e in evs]
for t in ("transfer_started", "transfer_progress", "item_started", "item_finished", "transfer_completed"):
    assert t in types, f"missing {t} in {types}"
prog = [e for e in evs if e["type"] == "transfer_progress"]
assert all(e["bytes_total"] >= 32 << 20 for e in prog), prog
assert prog[-1]["bytes_done"] == prog[-1]["bytes_total"], prog[-1]
done = [e for e in evs if e["type"] == "item_finished" and e["item"] == "big.bin"]
assert done and done[0]["error"] is None, done
assert types.index("transfer_started") < types.index("transfer_completed")
print("events ok:", len(evs), "events")
PY

# Durable events survive a restart: --since 0 replays them.
stop_agent B
start_agent B
wait_listening B
replay=$(timeout 3 "$SHOAL_BIN" --home "${NODE_HOME[B]}" events --since 0 --json || true)
grep -q '"transfer_completed"' <<<"$replay" || fail "--since 0 after a restart does not replay the transfer"
# Numbering goes on above every number seen before the restart, transient events included.
fresh=$(timeout 2 "$SHOAL_BIN" --home "${NODE_HOME[B]}" events --json || true)
python3 - "$events" "$fresh" <<'PY' || fail "event numbers after the restart repeat earlier ones (see above)"
import json, sys
old = {e["seq"]: e for e in (json.loads(l) for l in open(sys.argv[1]) if l.strip())}
after = [json.loads(l) for l in sys.argv[2].splitlines() if l.strip()]
# Stored events come back with their own number; every new one is numbered above them all.
new = [e for e in after if old.get(e["seq"]) != e]
assert new, "no new events from the restarted agent"
bad = [e for e in new if e["seq"] <= max(old)]
assert not bad, f"new events reuse numbers up to {max(old)}: {bad}"
print(f"event numbers: up to {max(old)} before the restart, from {min(e['seq'] for e in new)} after")
PY

# ls pages through the cluster's view with a cursor.
wait_synced --files 13 --peer A B "$FOLDER"
page1=$(shoal_ok B ls "$FOLDER" --limit 5 --json)
cursor=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert len(d["items"])==5, d; print(d["next_cursor"])' "$page1")
page2=$(shoal_ok B ls "$FOLDER" --limit 100 --cursor "$cursor" --json)
python3 - "$page1" "$page2" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
names = [i["name"] for i in a["items"]] + [i["name"] for i in b["items"]]
assert len(names) == 13 and len(set(names)) == 13, names
assert names == sorted(names), names
assert b["next_cursor"] is None, b
assert all(i["state"] == "synced" for i in a["items"] + b["items"]), a
PY
pass
