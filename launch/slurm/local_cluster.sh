#!/usr/bin/env bash
# A one-node Slurm on this machine, to try `recrl slurm` without a cluster (and for its test).
#
#   bash launch/slurm/local_cluster.sh install   # Debian's slurm-wlm and munge (apt-get; instant when present)
#   bash launch/slurm/local_cluster.sh start     # munged, slurmctld, slurmd; waits for the node to be idle
#   export SLURM_CONF=/tmp/recrl-slurm/slurm.conf   # what `start` prints: sbatch, srun, squeue use it
#   bash launch/slurm/local_cluster.sh stop      # stops what `start` started, nothing else
#
# Runs as root (the daemons do). State, logs and slurm.conf live in $RECRL_SLURM_DIR (default
# /tmp/recrl-slurm); the node is this host (`hostname -s`) with $RECRL_SLURM_CPUS CPUs (default 2)
# in one partition, `local`. The munge key /etc/munge/munge.key is generated when missing; a munged
# already running is used as it is. Ports: $RECRL_SLURMCTLD_PORT (6817) and $RECRL_SLURMD_PORT (6818).
set -euo pipefail

DIR="${RECRL_SLURM_DIR:-/tmp/recrl-slurm}"
CPUS="${RECRL_SLURM_CPUS:-2}"
CTLD_PORT="${RECRL_SLURMCTLD_PORT:-6817}"
SLURMD_PORT="${RECRL_SLURMD_PORT:-6818}"
PARTITION=local
CONF="$DIR/slurm.conf"
NAME="local_cluster.sh"

die() { echo "$NAME: $*" >&2; exit 1; }
need_root() { [[ "$(id -u)" == 0 ]] || die "run as root: the munge and Slurm daemons need it"; }
installed() { command -v sbatch >/dev/null && command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
              && command -v munged >/dev/null; }
alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

install_packages() {
    installed && return 0
    command -v apt-get >/dev/null || die "no apt-get here; install Slurm (slurmctld, slurmd, sbatch) and munge yourself"
    local sudo=()
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null || die "run as root: apt-get needs it"
        sudo=(sudo)
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
    installed || die "slurm-wlm and munge installed, yet slurmctld, slurmd, sbatch or munged is not on PATH"
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        return 0  # a munged already answers: use it
    fi
    if [[ ! -s /etc/munge/munge.key ]]; then
        install -d -o munge -g munge -m 0700 /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
    fi
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
    runuser -u munge -- munged
    touch "$DIR/munged.ours"  # `stop` ends only a munged that `start` started
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    die "munged did not answer; see /var/log/munge/munged.log"
}

write_conf() {
    local host
    host="$(hostname -s)"
    mkdir -p "$DIR/state" "$DIR/spool"
    cat >"$CONF" <<EOF
# A one-node Slurm for trying recrl's SLURM launch (written by launch/slurm/local_cluster.sh).
ClusterName=recrl
SlurmctldHost=$host
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
# Finished jobs stay visible to scontrol show job for 10 minutes.
MinJobAge=600
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
# The node may have more CPUs than it is given here.
SlurmdParameters=config_overrides
NodeName=$host CPUs=$CPUS RealMemory=4096 State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
    install_packages
    need_root
    mkdir -p "$DIR"
    export SLURM_CONF="$CONF"
    start_munge
    alive "$DIR/slurmctld.pid" || alive "$DIR/slurmd.pid" || write_conf
    alive "$DIR/slurmctld.pid" || slurmctld -f "$CONF"
    alive "$DIR/slurmd.pid" || slurmd -f "$CONF"
    local state=""
    for _ in $(seq 60); do
        state="$(sinfo -h -p "$PARTITION" -o %t 2>/dev/null || true)"
        [[ "$state" == idle || "$state" == mix || "$state" == alloc ]] && break
        sleep 0.5
    done
    [[ "$state" == idle || "$state" == mix || "$state" == alloc ]] \
        || die "the node did not come up (state '${state:-none}'); see $DIR/slurmctld.log and $DIR/slurmd.log"
    echo "Slurm is up: partition '$PARTITION', node $(hostname -s) with $CPUS CPUs. Use it with:"
    echo "export SLURM_CONF=$CONF"
}

stop_pid() {  # stop_pid PIDFILE: SIGTERM, then wait up to 10 s
    alive "$1" || return 0
    local pid
    pid="$(cat "$1")"
    kill "$pid"
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.2
    done
    die "process $pid ($1) did not stop within 10 s"
}

stop() {
    stop_pid "$DIR/slurmd.pid"
    stop_pid "$DIR/slurmctld.pid"
    if [[ -f "$DIR/munged.ours" ]]; then
        stop_pid /run/munge/munged.pid
        rm -f "$DIR/munged.ours"
    fi
}

case "${1:-}" in
    install) install_packages ;;
    start) start ;;
    stop) stop ;;
    conf) echo "$CONF" ;;
    *) echo "usage: $NAME install|start|stop|conf" >&2; exit 2 ;;
esac
