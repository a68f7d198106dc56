#!/usr/bin/env bash
# A real-scheduler test of the multi-target sweep: installs Debian's SLURM, brings up a
# throwaway single-node cluster with accounting (munged, MariaDB, slurmdbd, slurmctld,
# slurmd; two partitions standing for two targets), runs a tiny two-target sweep with
# `--executor slurm` through profiles/slurm, and checks from sacct that every benchmark
# job ran as a SLURM job on its target's partition, that a target's jobs never
# overlapped, and that the merged summary has both targets. It stops the daemons it
# started, by their process ids, whatever happens.
#
# Needs root and apt (a fresh Debian machine, as in CI); refuses to touch a machine
# that already runs SLURM. Usage: tests/slurm/run_slurm_test.sh [WORKDIR]
# Environment: SNAKEMAKE (default: .venv/bin/snakemake, else the one on PATH),
# INFERBENCH_SLURM_TIMEOUT (seconds for the sweep, default 900).
# What this test cluster differs in from a production one: docs/cluster.md.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=${1:-$(mktemp -d /tmp/inferbench-slurm.XXXXXX)}
SWEEP_TIMEOUT=${INFERBENCH_SLURM_TIMEOUT:-900}
MARK="# written by inferbench tests/slurm/run_slurm_test.sh"
CLUSTER=inferbench-test
PARTITIONS=(cpu-a cpu-b)          # = the targets of tests/slurm/targets.yaml
DB_PORT=3399                      # private MariaDB, TCP on localhost only
T0=$(date +%s)
PIDS=()                           # daemons this script started, in start order
STATE=""                          # munged's and MariaDB's files (they run as their users)

log() { printf '[slurm-test %4ss] %s\n' "$(($(date +%s) - T0))" "$*"; }
fail() { log "FAIL: $*"; exit 1; }

stop_daemons() {
    local i pid
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do   # reverse start order
        pid=${PIDS[i]}
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [[ ${#PIDS[@]} -gt 0 ]]; then log "stopped daemons ${PIDS[*]}"; fi
    PIDS=()
    # Our configs go too: with a slurm.conf naming a cluster that is down, every SLURM
    # client (and so every `snakemake` start, whose slurm plugin runs `scontrol show
    # config`) waits 10 s for it.
    for conf in /etc/slurm/slurm.conf /etc/slurm/slurmdbd.conf; do
        if [[ -e $conf ]] && grep -qF "$MARK" "$conf"; then rm -f "$conf"; fi
    done
    if [[ -n $STATE ]]; then
        cp "$STATE"/munge/*.log "$STATE"/mysql/*.err "$WORK/logs/" 2>/dev/null || true
        rm -rf "$STATE"
    fi
}
trap stop_daemons EXIT

start() {  # start NAME COMMAND...: a daemon in the foreground, in the background
    "${@:2}" > "$WORK/logs/$1.out" 2>&1 &
    PIDS+=("$!")
    log "started $1 (pid $!)"
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...
    local deadline=$(($(date +%s) + $1))
    until "${@:3}" > /dev/null 2>&1; do
        [[ $(date +%s) -lt $deadline ]] || fail "$2 not up after $1 s"
        kill -0 "${PIDS[-1]}" 2>/dev/null || fail "$2 exited; see $WORK/logs"
        sleep 0.3
    done
}

# --- preconditions -----------------------------------------------------------------
[[ $(id -u) -eq 0 ]] || { echo "needs root (writes /etc/slurm, starts daemons)"; exit 77; }
command -v apt-get > /dev/null || { echo "needs apt-get (Debian)"; exit 77; }
for daemon in slurmctld slurmd slurmdbd; do
    if pgrep -x "$daemon" > /dev/null; then fail "a $daemon is already running here"; fi
done
for conf in /etc/slurm/slurm.conf /etc/slurm/slurmdbd.conf; do
    if [[ -e $conf ]] && ! grep -qF "$MARK" "$conf"; then
        fail "$conf exists and is not ours: refusing to replace a real cluster's config"
    fi
done
if [[ -z ${SNAKEMAKE:-} ]]; then
    SNAKEMAKE=$REPO/.venv/bin/snakemake
    [[ -x $SNAKEMAKE ]] || SNAKEMAKE=$(command -v snakemake) || fail "no snakemake"
fi
PYTHON=$(dirname "$SNAKEMAKE")/python
mkdir -p "$WORK"/{logs,slurm/state,slurm/spool}
# munged and mariadbd run as their own users: their files live where those users can
# reach them (WORK may sit in a private folder, e.g. pytest's tmp_path).
STATE=$(mktemp -d /tmp/inferbench-slurm-daemons.XXXXXX)
chmod 755 "$STATE"
mkdir -p "$STATE"/{munge,mysql}
log "work dir $WORK"

# --- install -----------------------------------------------------------------------
need=()
for pkg in slurm-wlm slurmdbd mariadb-server munge; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
if [[ ${#need[@]} -gt 0 ]]; then
    log "apt-get install ${need[*]}"
    # No service may start from a package script: this test starts its own daemons.
    created_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends "${need[@]}" > "$WORK/logs/apt.log" 2>&1
    then
        apt-get update -q > "$WORK/logs/apt-update.log" 2>&1
        apt-get install -y -q --no-install-recommends "${need[@]}" > "$WORK/logs/apt.log" 2>&1 \
            || fail "apt-get install failed; see $WORK/logs/apt.log"
    fi
    if [[ $created_policy -eq 1 ]]; then rm -f /usr/sbin/policy-rc.d; fi
fi
# (find_spec, not import: importing the plugin probes SLURM, 10 s while it is down)
if ! "$PYTHON" -c "import importlib.util as u, sys
sys.exit(u.find_spec('snakemake_executor_plugin_slurm') is None)"; then
    log "pip install snakemake-executor-plugin-slurm"
    "$PYTHON" -m pip install -q snakemake-executor-plugin-slurm > "$WORK/logs/pip.log" 2>&1
fi
T_INSTALLED=$(date +%s)

# --- configure ---------------------------------------------------------------------
NODE=$(slurmd -C | head -n 1)        # this machine's real CPUs, sockets and memory
[[ $NODE == NodeName=* ]] || fail "slurmd -C printed: $NODE"
HOST=${NODE#NodeName=}
HOST=${HOST%% *}
mkdir -p /etc/slurm

# Single node, run as root without systemd or cgroups: proctrack/linuxproc and task/none
# instead of the cgroup plugins; cons_tres with CR_Core_Memory and DefMemPerCPU so that
# jobs of both partitions share the node instead of each taking it whole.
cat > /etc/slurm/slurm.conf <<EOF
$MARK
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
MinJobAge=600
KillWait=5
InactiveLimit=0
StateSaveLocation=$WORK/slurm/state
SlurmdSpoolDir=$WORK/slurm/spool
SlurmctldPidFile=$WORK/slurm/slurmctld.pid
SlurmdPidFile=$WORK/slurm/slurmd.pid
SlurmctldLogFile=$WORK/logs/slurmctld.log
SlurmdLogFile=$WORK/logs/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
$NODE NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=${PARTITIONS[0]} Nodes=$HOST Default=YES MaxTime=60 State=UP
PartitionName=${PARTITIONS[1]} Nodes=$HOST MaxTime=60 State=UP
EOF

DB_PASS=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
cat > /etc/slurm/slurmdbd.conf <<EOF
$MARK
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=$WORK/slurm/slurmdbd.pid
LogFile=$WORK/logs/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
chmod 600 /etc/slurm/slurmdbd.conf

# --- start -------------------------------------------------------------------------
# munged on its standard socket (the SLURM clients' auth plugin only knows that one),
# as the munge user, with the key the package generated. One already running (not
# ours) is used as it is and left running.
if [[ -S /run/munge/munge.socket.2 ]] && munge -n 2>/dev/null | unmunge > /dev/null 2>&1; then
    log "munged already running: using it"
else
    install -d -o munge -g munge -m 755 /run/munge
    chown munge:munge "$STATE/munge"
    start munged setpriv --reuid=munge --regid=munge --init-groups munged --foreground \
        --log-file="$STATE/munge/munged.log" --seed-file="$STATE/munge/munged.seed"
    wait_for 15 munged bash -c "munge -n | unmunge"
fi

chown mysql:mysql "$STATE/mysql"
mariadb-install-db --no-defaults --user=mysql --datadir="$STATE/mysql/data" \
    --auth-root-authentication-method=socket --skip-test-db > "$WORK/logs/mariadb-install.log" 2>&1
DB_SOCKET=$STATE/mysql/mysqld.sock
start mariadbd mariadbd --no-defaults --user=mysql --datadir="$STATE/mysql/data" \
    --socket="$DB_SOCKET" --port=$DB_PORT --bind-address=127.0.0.1 --skip-name-resolve \
    --pid-file="$STATE/mysql/mariadbd.pid" --log-error="$STATE/mysql/mariadbd.err" \
    --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900
wait_for 30 mariadbd mariadb-admin --socket="$DB_SOCKET" ping
mariadb --socket="$DB_SOCKET" <<EOF
CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
EOF

start slurmdbd slurmdbd -D
wait_for 30 slurmdbd sacctmgr -n list cluster
# Register the cluster, an account and the user before slurmctld starts, as a
# production cluster's accounting is set up.
sacctmgr -i add cluster "$CLUSTER" > "$WORK/logs/sacctmgr.log"
sacctmgr -i add account inferbench Cluster="$CLUSTER" Description=test Organization=test \
    >> "$WORK/logs/sacctmgr.log"
sacctmgr -i add user root Account=inferbench DefaultAccount=inferbench Cluster="$CLUSTER" \
    >> "$WORK/logs/sacctmgr.log"

start slurmctld slurmctld -D
wait_for 30 slurmctld scontrol ping
start slurmd slurmd -D
wait_for 60 "node $HOST idle" bash -c "sinfo -h -n '$HOST' -o '%t' | grep -qx idle"
T_CLUSTER=$(date +%s)
log "cluster up: $(sinfo -h -o '%P %t %c %m' | tr '\n' ' ')"

# --- the sweep ---------------------------------------------------------------------
SWEEP_START=$(date +%Y-%m-%dT%H:%M:%S)
log "sweep: snakemake --executor slurm (profiles/slurm), timeout $SWEEP_TIMEOUT s"
set +e
(cd "$WORK" && timeout -s KILL "$SWEEP_TIMEOUT" "$SNAKEMAKE" --snakefile "$REPO/Snakefile" \
    --directory "$WORK" --workflow-profile "$REPO/profiles/slurm" \
    --configfile "$REPO/tests/configs/tiny.yaml" "$REPO/tests/slurm/targets.yaml" \
    --config results_dir="$WORK/results" --jobs 4 \
    --slurm-init-seconds-before-status-checks 2 --slurm-logdir "$WORK/slurm-logs" \
    "$WORK/results/summary.csv") > "$WORK/logs/snakemake.log" 2>&1
rc=$?
set -e
T_SWEEP=$(date +%s)
[[ $rc -eq 0 ]] || { tail -n 60 "$WORK/logs/snakemake.log"; fail "snakemake exited $rc"; }
log "sweep done"

# --- checks ------------------------------------------------------------------------
sacct -X -n -P -S "$SWEEP_START" --format=JobID,Partition,State,Start,End,Comment \
    > "$WORK/sacct.txt"
"$PYTHON" - "$WORK" "${PARTITIONS[@]}" <<'EOF'
"""Bench jobs in sacct: one COMPLETED job per launch, on its target's partition, and
the jobs of one target never overlapping; the summary has both targets."""
import itertools
import json
import sys
from datetime import datetime
from pathlib import Path

import pandas as pd

work, targets = Path(sys.argv[1]), sys.argv[2:]
jobs = {}
for line in (work / "sacct.txt").read_text().splitlines():
    job_id, partition, state, start, end, comment = line.split("|", 5)
    jobs[job_id] = dict(partition=partition, state=state, comment=comment,
                        start=datetime.fromisoformat(start), end=datetime.fromisoformat(end))
bench = {k: v for k, v in jobs.items() if v["comment"].startswith("rule_bench_")}
print(f"sacct: {len(jobs)} jobs, {len(bench)} bench jobs")
results = sorted((work / "results" / "bench").glob("*/*/*/bs*.json"))
assert len(results) == 2 * len(targets), [str(p) for p in results]
for path in results:
    result = json.loads(path.read_text())
    target = result["target"]
    slurm = result["fingerprint"]["scheduler"].get("slurm") or {}
    job = jobs.get(slurm.get("job_id"))
    assert job is not None, f"{path}: not measured in a SLURM job of this run ({slurm})"
    assert job["comment"].startswith(f"rule_bench_wildcards_{target}_"), (path, job)
    assert job["partition"] == target == slurm["partition"], (path, job, slurm)
    assert job["state"] == "COMPLETED", (path, job)
    assert result["status"] == "ok", (path, result.get("reason"))
launches = {t: 0 for t in targets}   # each launch of a row is a SLURM job of its own
for path in results:
    result = json.loads(path.read_text())
    launches[result["target"]] += result["launches"]
for target in targets:   # one device per target: its jobs never overlap
    spans = sorted((j["start"], j["end"]) for j in bench.values() if j["partition"] == target)
    assert len(spans) == launches[target] >= 2, (target, spans)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, f"{target}: bench jobs overlapped {spans}"
# ... while jobs of different targets do run at the same time
a, b = ([(j["start"], j["end"]) for j in bench.values() if j["partition"] == t]
        for t in targets[:2])
assert any(s1 < e2 and s2 < e1 for s1, e1 in a for s2, e2 in b), f"never concurrent: {a} {b}"
summary = pd.read_csv(work / "results" / "summary.csv")
assert sorted(summary.target.unique()) == sorted(targets), summary.target.unique()
assert (summary.status == "ok").all(), summary[["target", "backend", "status", "reason"]]
print(summary[["target", "backend", "batch_size", "status", "p50_ms"]].to_string(index=False))
EOF
T_END=$(date +%s)
cat > "$WORK/timings.json" <<EOF
{"install_s": $((T_INSTALLED - T0)), "cluster_start_s": $((T_CLUSTER - T_INSTALLED)),
 "sweep_s": $((T_SWEEP - T_CLUSTER)), "total_s": $((T_END - T0))}
EOF
log "PASS: install $((T_INSTALLED - T0)) s, cluster $((T_CLUSTER - T_INSTALLED)) s," \
    "sweep $((T_SWEEP - T_CLUSTER)) s, total $((T_END - T0)) s"
