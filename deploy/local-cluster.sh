#!/usr/bin/env bash
# A 3-node xes cluster on loopback, for development. Nothing is installed system-wide.
#
#   deploy/local-cluster.sh [start [nN...]]  create ./xes-cluster on the first run, start the
#                                            nodes (all, or those named), wait for their ports
#   deploy/local-cluster.sh status [nN]      which nodes run, and `xes cluster status` on n1 (nN)
#   deploy/local-cluster.sh stop [nN...]     SIGTERM the nodes (pid files), wait until they exit;
#                                            `stop n3`, later `start n3`: a node loss and return
#   deploy/local-cluster.sh clean            stop, then delete ./xes-cluster (all its data)
#
# Layout (in the repository root; XES_CLUSTER_DIR overrides it):
#   xes-cluster/secret                  random cluster secret, mode 0600, shared by the nodes
#   xes-cluster/tls/localhost.{crt,key} one self-signed certificate for all three nodes
#   xes-cluster/nN/xes.toml             configuration (written once; edit it freely)
#   xes-cluster/nN/data/                the node's data_dir (LMDB, Raft journal, log.sock)
#   xes-cluster/nN/xes.log, xes.pid     console log and pid of `xes serve`
#
# node  STARTTLS        direct TLS      Raft            HTTP / HTTPS
# n1    127.0.0.1:5222  127.0.0.1:5223  127.0.0.1:5290  5280 / 5281
# n2    127.0.0.1:5232  127.0.0.1:5233  127.0.0.1:5291  5282 / 5283
# n3    127.0.0.1:5242  127.0.0.1:5243  127.0.0.1:5292  5284 / 5285
#
# xes comes from .venv/bin/xes (installed there like tools/serve.sh does when missing), or from
# $XES (the xes of another virtualenv: its python must sit beside it).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${XES_CLUSTER_DIR:-$ROOT/xes-cluster}
XES=${XES:-$ROOT/.venv/bin/xes}
HOST=127.0.0.1
NODES=(n1 n2 n3)
C2S=(5222 5232 5242)
C2S_TLS=(5223 5233 5243)
HTTP=(5280 5282 5284)
HTTPS=(5281 5283 5285)
RAFT=(5290 5291 5292)
START_TIMEOUT=90 # seconds for all client ports to accept (a node opens them once it has quorum)
STOP_TIMEOUT=60  # seconds per node after SIGTERM (streams closed, session ends recorded)

say() { printf '%s\n' "$*"; }
die() {
	printf 'local-cluster: %s\n' "$*" >&2
	exit 1
}

# A path as the user would type it from the current directory.
rel() {
	case $1 in
	"$PWD"/*) printf '%s' "${1#"$PWD"/}" ;;
	*) printf '%s' "$1" ;;
	esac
}

ensure_xes() {
	[[ -x $XES ]] && return
	[[ $XES == "$ROOT/.venv/bin/xes" ]] || die "XES=$XES is not an executable"
	command -v python3 >/dev/null || die "python3 not found: install Python 3.11+ with venv"
	python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
		die "python3 is $(python3 -V 2>&1 | cut -d' ' -f2); xes needs 3.11 or newer"
	say "installing xes into $(rel "$ROOT/.venv") (once; like tools/serve.sh)"
	python3 -m venv "$ROOT/.venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
	"$ROOT/.venv/bin/pip" install -q --upgrade pip >/dev/null
	"$ROOT/.venv/bin/pip" install -q -e "$ROOT" ||
		die "pip install -e . failed; run ./tools/serve.sh or 'pip install -e .' and retry"
	[[ -x $XES ]] || die "$XES still missing after the install"
}

config_of() { printf '%s/%s/xes.toml' "$DIR" "$1"; }

# The pid of node $1's `xes serve` when it runs (checked against its command line: pids recycle).
pid_of() {
	local pidfile=$DIR/$1/xes.pid pid
	[[ -f $pidfile ]] || return 1
	pid=$(<"$pidfile")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "serve --config $(config_of "$1")" ||
		return 1
	printf '%s' "$pid"
}

accepts() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# SEL: the indices of the nodes named in "$@" (all nodes when none is named).
select_nodes() {
	local n i found
	SEL=()
	(($#)) || {
		SEL=("${!NODES[@]}")
		return
	}
	for n in "$@"; do
		found=
		for i in "${!NODES[@]}"; do
			[[ ${NODES[i]} == "$n" ]] && found=$i
		done
		[[ -n $found ]] || die "no node $n (nodes: ${NODES[*]})"
		SEL+=("$found")
	done
}

init() {
	case $DIR in *'"'* | *\\*) die "XES_CLUSTER_DIR must not contain quotes or backslashes" ;; esac
	mkdir -p "$DIR"
	[[ -f $DIR/.gitignore ]] || printf '*\n' >"$DIR/.gitignore"
	touch "$DIR/.xes-local-cluster"
	if [[ ! -s $DIR/secret ]]; then
		(umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/secret")
	fi
	chmod 600 "$DIR/secret"
	if [[ ! -f $DIR/tls/localhost.crt || ! -f $DIR/tls/localhost.key ]]; then
		mkdir -p "$DIR/tls"
		"$(dirname "$XES")/python" - "$DIR/tls" <<-'EOF'
			import sys
			from pathlib import Path
			from xes.tlsutil import ensure_self_signed
			d = Path(sys.argv[1])
			ensure_self_signed(d / "localhost.crt", d / "localhost.key", "localhost")
		EOF
	fi
	local i j n peers
	for i in "${!NODES[@]}"; do
		n=${NODES[i]}
		[[ -f $(config_of "$n") ]] && continue
		peers=""
		for j in "${!NODES[@]}"; do
			[[ $j == "$i" ]] || peers+="${peers:+, }\"$HOST:${RAFT[j]}\""
		done
		mkdir -p "$DIR/$n"
		cat >"$(config_of "$n")" <<-EOF
			# Node $n of the local development cluster (written once by deploy/local-cluster.sh).
			domain = "localhost"
			data_dir = "data"

			[listen]
			c2s = "$HOST:${C2S[i]}"
			c2s_tls = "$HOST:${C2S_TLS[i]}"
			http = "$HOST:${HTTP[i]}"
			https = "$HOST:${HTTPS[i]}"

			[tls]
			cert = "$DIR/tls/localhost.crt"
			key = "$DIR/tls/localhost.key"

			[cluster]
			node_id = "$n"
			raft = "$HOST:${RAFT[i]}"
			peers = [$peers]
			secret_file = "$DIR/secret"

			[log]
			format = "console"
		EOF
		"$XES" check-config --config "$(config_of "$n")" >/dev/null
	done
}

start() {
	select_nodes "$@"
	ensure_xes
	init
	local i n pid port started=()
	for i in "${SEL[@]}"; do
		n=${NODES[i]}
		if pid=$(pid_of "$n"); then
			say "$n already running (pid $pid)"
			continue
		fi
		for port in "${C2S[i]}" "${C2S_TLS[i]}"; do
			accepts "$port" && die "$HOST:$port (for $n) is taken by another process"
		done
		(
			cd "$DIR/$n"
			printf -- '--- %s start\n' "$(date -u +%FT%TZ)" >>xes.log
			nohup "$XES" serve --config "$(config_of "$n")" >>xes.log 2>&1 &
			printf '%s\n' "$!" >xes.pid
		)
		started+=("$n")
	done
	if ((${#started[@]})); then
		say "started ${started[*]}; waiting for the client ports (a node opens them once the cluster has a quorum)"
	fi
	local deadline=$((SECONDS + START_TIMEOUT)) waiting
	while :; do
		waiting=()
		for i in "${SEL[@]}"; do
			n=${NODES[i]}
			# kill -0, not pid_of: until nohup has exec'd xes, the command line is still bash's.
			if ! kill -0 "$(<"$DIR/$n/xes.pid")" 2>/dev/null; then
				say "$n exited; last lines of $(rel "$DIR/$n/xes.log"):" >&2
				tail -n 20 "$DIR/$n/xes.log" >&2
				die "$n did not start (the other nodes keep running: '$0 stop' stops them)"
			fi
			if ! accepts "${C2S[i]}" || ! accepts "${C2S_TLS[i]}"; then waiting+=("$n"); fi
		done
		((${#waiting[@]} == 0)) && break
		((SECONDS < deadline)) ||
			die "${waiting[*]} not accepting after ${START_TIMEOUT}s; see $(rel "$DIR")/nN/xes.log"
		sleep 0.2
	done
	local x
	x=$(rel "$XES")
	say ""
	say "xes cluster: domain localhost, data in $(rel "$DIR")/"
	for i in "${!NODES[@]}"; do
		n=${NODES[i]}
		pid_of "$n" >/dev/null || {
			say "  $n  stopped"
			continue
		}
		say "  $n  pid $(pid_of "$n")  c2s $HOST:${C2S[i]} (STARTTLS), $HOST:${C2S_TLS[i]} (TLS)  raft $HOST:${RAFT[i]}  log $(rel "$DIR/$n/xes.log")"
	done
	say ""
	say "Add users through any node (the change is replicated to all three):"
	say "  $x user add alice@localhost --config $(rel "$(config_of n1)")"
	say "  $x user add bob@localhost --config $(rel "$(config_of n2)") --password bob-pw"
	say "Connect a client as alice@localhost to $HOST port 5222 (n1), 5232 (n2) or 5242 (n3)"
	say "(direct TLS: 5223/5233/5243). All nodes share one self-signed certificate for localhost:"
	say "  $(rel "$DIR/tls/localhost.crt"); accept it once. Profanity:"
	say "  /connect alice@localhost server $HOST port 5232 tls force"
	say "Cluster state:  $0 status     Stop:  $0 stop"
}

stop() {
	local n pid deadline any=0 i k
	select_nodes "$@"
	# Reverse order: the earlier nodes keep a quorum while the later ones record their sessions' ends.
	for ((k = ${#SEL[@]} - 1; k >= 0; k--)); do
		i=${SEL[k]}
		n=${NODES[i]}
		pid=$(pid_of "$n") || {
			rm -f "$DIR/$n/xes.pid"
			continue
		}
		any=1
		say "stopping $n (pid $pid)"
		kill -TERM "$pid"
		deadline=$((SECONDS + STOP_TIMEOUT))
		while kill -0 "$pid" 2>/dev/null; do
			if ((SECONDS >= deadline)); then
				say "$n still running ${STOP_TIMEOUT}s after SIGTERM; sending SIGKILL" >&2
				kill -KILL "$pid" 2>/dev/null || true
				break
			fi
			sleep 0.2
		done
		rm -f "$DIR/$n/xes.pid"
	done
	if ((any)); then say "stopped"; else say "no node running"; fi
}

status() {
	local node=${1:-n1} i n pid
	[[ -f $(config_of "$node") ]] || die "no node $node in $(rel "$DIR") (run '$0' first)"
	for i in "${!NODES[@]}"; do
		n=${NODES[i]}
		if pid=$(pid_of "$n"); then
			say "$n running (pid $pid)  c2s $HOST:${C2S[i]}  raft $HOST:${RAFT[i]}"
		else
			say "$n stopped"
		fi
	done
	ensure_xes
	"$XES" cluster status --config "$(config_of "$node")"
}

clean() {
	[[ -d $DIR ]] || {
		say "nothing to clean ($(rel "$DIR") does not exist)"
		return
	}
	[[ -f $DIR/.xes-local-cluster ]] || die "$DIR was not made by this script; not deleting it"
	stop
	rm -rf "$DIR"
	say "deleted $(rel "$DIR")"
}

case ${1:-start} in
start)
	shift $(($# > 0))
	start "$@"
	;;
stop)
	shift
	stop "$@"
	;;
status) status "${2:-}" ;;
clean) clean ;;
-h | --help | help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
*) die "usage: $0 [start [nN..]|status [nN]|stop [nN..]|clean]" ;;
esac
