#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, to try a sweep before a cluster (and for the
# tests marked `slurm`): Debian's slurm-wlm 22.05 with munge, and slurmdbd on MariaDB for the
# accounting that `sacct` (and so submitit) reads.
#
#   scripts/slurm_local.sh start    install what is missing, start the daemons, wait for the node
#   scripts/slurm_local.sh status   each daemon's state, the node's (exit 0 when all run)
#   scripts/slurm_local.sh stop     cancel the cluster's jobs, stop the daemons it started
#   scripts/slurm_local.sh env      the line that points slurm's commands at it:
#                                   eval "$(scripts/slurm_local.sh env)"
#
# Needs root (the daemons run as root, munged as munge, MariaDB as mysql) and no systemd. Its
# configuration, state, spool, logs and pid files are all under one folder, $RNSF_SLURM_DIR
# (/tmp/rnsf-slurm); `stop` ends only the processes of the pid files there, never by name.
# start and stop are idempotent. The daemons listen on 127.0.0.1, ports 6817-6819 (slurm's
# defaults): one such cluster per machine. The node is `localhost`, with every core of this
# machine, in the partition `debug`.
set -euo pipefail

D=${RNSF_SLURM_DIR:-/tmp/rnsf-slurm}
CLUSTER=rnsf
PARTITION=debug
export SLURM_CONF=$D/etc/slurm.conf
export MYSQL_UNIX_PORT=$D/mysql/mysqld.sock # slurmdbd's MariaDB client reads it
export RNSF_SLURM_DIR=$D                    # marks the daemons as this folder's (see ours)
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)

say() { echo "slurm_local: $*"; }
die() {
	echo "slurm_local: error: $*" >&2
	exit 1
}

pidfile() { # munged, which runs as munge, keeps its own in its folder
	if [[ $1 == munged ]]; then echo "$D/munge/munged.pid"; else echo "$D/run/$1.pid"; fi
}

# whether pid $1 is a process this folder started (its command line or environment names $D),
# so that a pid reused by another process is never signalled
ours() {
	local pid=$1
	[[ -n $pid && -r /proc/$pid/cmdline ]] || return 1
	{ tr '\0' '\n' </proc/"$pid"/cmdline | grep -qF "$D"; } 2>/dev/null && return 0
	{ tr '\0' '\n' </proc/"$pid"/environ | grep -qxF "RNSF_SLURM_DIR=$D"; } 2>/dev/null
}

alive() { # pid $1 exists and is not a zombie
	local state
	state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
	[[ -n $state && $state != Z* ]]
}

running() { # daemon name -> 0 if its pid file names a live process of ours
	local f
	f=$(pidfile "$1")
	[[ -s $f ]] && ours "$(head -n1 "$f")"
}

# wait up to $1 seconds for the command after it to succeed
wait_for() {
	local limit=$1 what=$2
	shift 2
	local end=$((SECONDS + limit))
	until "$@" >/dev/null 2>&1; do
		((SECONDS < end)) || die "$what not ready after ${limit}s; see the logs in $D/log"
		sleep 0.3
	done
}

install_packages() {
	local missing=()
	for p in "${PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
	done
	((${#missing[@]} == 0)) && return
	command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
	say "installing ${missing[*]}"
	apt-get update -qq >"$D/log/apt.log" 2>&1 || die "apt-get update failed: see $D/log/apt.log"
	# the packages would start their own system daemons where they can: policy-rc.d says no
	local policy=/usr/sbin/policy-rc.d created=0
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 0755 "$policy" && created=1
	fi
	local rc=0
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		"${missing[@]}" >>"$D/log/apt.log" 2>&1 || rc=$?
	((created)) && rm -f "$policy"
	((rc == 0)) || die "apt-get install failed: see $D/log/apt.log"
}

write_configs() {
	mkdir -p "$D"/{etc,state,spool,log,run}
	chmod 0755 "$D" "$D/log" "$D/run"
	local cpus
	cpus=$(nproc)
	cat >"$D/etc/slurm.conf" <<EOF
# written by scripts/slurm_local.sh
ClusterName=$CLUSTER
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
CredType=cred/munge
# the munge socket of this folder; cred_expire: a requeued job may start again after 10 s (not 120)
AuthInfo=socket=$D/munge/munged.socket,cred_expire=10
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool/slurmd
SlurmctldPidFile=$(pidfile slurmctld)
SlurmdPidFile=$(pidfile slurmd)
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups: processes tracked through /proc, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobRequeue=1
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5,bf_interval=5
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
# the munge socket for connections to slurmdbd (slurm reads it from here, not from AuthInfo)
AccountingStoragePass=$D/munge/munged.socket
JobCompType=jobcomp/none
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=$PARTITION Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
	cat >"$D/etc/slurmdbd.conf" <<EOF
# written by scripts/slurm_local.sh
AuthType=auth/munge
AuthInfo=socket=$D/munge/munged.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
PidFile=$(pidfile slurmdbd)
LogFile=$D/log/slurmdbd.log
DebugLevel=info
# MariaDB of this folder through its unix socket (MYSQL_UNIX_PORT), as root: socket authentication
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
EOF
	chmod 0600 "$D/etc/slurmdbd.conf" # slurmdbd refuses a readable one
}

start_munged() {
	running munged && return
	mkdir -p "$D/munge/key"
	if [[ ! -s $D/munge/key/munge.key ]]; then
		dd if=/dev/urandom of="$D/munge/key/munge.key" bs=1024 count=1 status=none
	fi
	# munged checks these: the key owned by munge, 0400, in a 0700 folder
	chown -R munge:munge "$D/munge"
	chmod 0755 "$D/munge"
	chmod 0700 "$D/munge/key"
	chmod 0400 "$D/munge/key/munge.key"
	runuser -u munge -- munged --socket="$D/munge/munged.socket" \
		--key-file="$D/munge/key/munge.key" --pid-file="$(pidfile munged)" \
		--log-file="$D/munge/munged.log" --seed-file="$D/munge/munged.seed"
	wait_for 20 munged sh -c "munge -n -S '$D/munge/munged.socket' | unmunge -S '$D/munge/munged.socket'"
}

start_mariadb() {
	running mariadbd && return
	if [[ ! -d $D/mysql/data/mysql ]]; then
		mkdir -p "$D/mysql/data"
		chown -R mysql:mysql "$D/mysql"
		mariadb-install-db --no-defaults --user=mysql --datadir="$D/mysql/data" \
			--auth-root-authentication-method=socket --skip-test-db \
			>"$D/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed: see $D/log/mariadb-install.log"
	fi
	chown -R mysql:mysql "$D/mysql"
	touch "$D/log/mariadb.log" && chown mysql:mysql "$D/log/mariadb.log"
	setsid mariadbd --no-defaults --user=mysql --datadir="$D/mysql/data" \
		--socket="$MYSQL_UNIX_PORT" --pid-file="$D/mysql/mariadbd.pid" --skip-networking \
		--log-error="$D/log/mariadb.log" --innodb-buffer-pool-size=16M \
		--performance-schema=OFF </dev/null >/dev/null 2>&1 &
	echo $! >"$(pidfile mariadbd)"
	wait_for 60 MariaDB mariadb-admin --no-defaults --socket="$MYSQL_UNIX_PORT" ping
}

start_slurmdbd() {
	running slurmdbd && return
	slurmdbd
	wait_for 60 slurmdbd sacctmgr -n show cluster
	if [[ -z $(sacctmgr -n -P show cluster "$CLUSTER" format=cluster) ]]; then
		sacctmgr -i add cluster "$CLUSTER" >/dev/null
	fi
}

node_idle() { [[ $(sinfo -h -n localhost -o %T 2>/dev/null) == idle* ]]; }

start_slurm() {
	running slurmctld || slurmctld
	running slurmd || slurmd -N localhost
	wait_for 60 "the node (sinfo: $(sinfo -h -o %T 2>/dev/null || true))" node_idle
}

start() {
	[[ $(id -u) == 0 ]] || die "start needs root (it installs packages and runs the daemons)"
	mkdir -p "$D/log"
	install_packages
	write_configs
	start_munged
	start_mariadb
	start_slurmdbd
	start_slurm
	say "running (${D}); eval \"\$($0 env)\" points sbatch, squeue, sacct, … at it"
}

stop_pid() { # name: TERM the process of its pid file, wait, then KILL
	local name=$1 f pid
	f=$(pidfile "$name")
	[[ -s $f ]] || return 0
	pid=$(head -n1 "$f")
	if ours "$pid"; then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 100); do
			alive "$pid" || break
			sleep 0.2
		done
		if alive "$pid"; then
			say "$name ($pid) did not stop in 20 s: SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	rm -f "$f"
}

stop() {
	if running slurmctld; then # end the cluster's jobs first: no job step outlives slurmd
		scancel --partition="$PARTITION" 2>/dev/null || true
		for _ in $(seq 60); do
			[[ -z $(squeue -h -o %i 2>/dev/null) ]] && break
			sleep 0.5
		done
	fi
	for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
		stop_pid "${DAEMONS[i]}"
	done
	say "stopped"
}

status() {
	local all=0
	for name in "${DAEMONS[@]}"; do
		if running "$name"; then
			say "$name running (pid $(head -n1 "$(pidfile "$name")"))"
		else
			say "$name stopped"
			all=3
		fi
	done
	if ((all == 0)); then
		sinfo
	fi
	return $all
}

case ${1:-} in
start) start ;;
stop) stop ;;
status) status ;;
env) echo "export SLURM_CONF=$SLURM_CONF" ;;
*)
	echo "usage: $0 start|stop|status|env" >&2
	exit 2
	;;
esac
