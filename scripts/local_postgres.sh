#!/usr/bin/env bash
# A throwaway PostgreSQL server on this machine, for a multi-process `nas search` study
# (several `nas search` commands, or --workers, sharing one study) and for the tests.
#
#   scripts/local_postgres.sh start    initialise (first time) and start; prints the storage URL
#   scripts/local_postgres.sh url      the storage URL, without the password
#   scripts/local_postgres.sh pgpass   the path of the password file to export as PGPASSFILE
#   scripts/local_postgres.sh status   running or not (exit 0 when running)
#   scripts/local_postgres.sh stop     stop it (its data stays: `start` brings the studies back)
#   scripts/local_postgres.sh clean    stop it and delete its folder
#
# The server listens on 127.0.0.1 only, on a free port, with its data in $EFFNAS_PG_DIR
# (default /tmp/effnas-postgres-$UID). Run as root, the server runs as the unprivileged user
# `postgres` (Debian's package makes it; created otherwise); as anyone else, as that user.
# A role and a database (both `effnas`, or $EFFNAS_PG_USER / $EFFNAS_PG_DB) are made with a
# random password, written only to a pgpass file (mode 600) in that folder. The URL printed
# has no password: give it through the environment, never on a command line, e.g.
#
#   export PGPASSFILE=$(scripts/local_postgres.sh pgpass)
#   nas search ... --storage "$(scripts/local_postgres.sh url)" --study NAME
#
# psycopg (pip install "effnas[postgres]") reads PGPASSFILE or PGPASSWORD like psql does.
# `url --with-password` prints the URL with the password (for scripts such as .ci/run that
# capture it; avoid it elsewhere). Debian's `postgresql` package provides the server
# (apt-get install postgresql); its programs are found under /usr/lib/postgresql/*/bin.
set -euo pipefail

DIR=${EFFNAS_PG_DIR:-/tmp/effnas-postgres-$(id -u)}
ROLE=${EFFNAS_PG_USER:-effnas}
DB=${EFFNAS_PG_DB:-effnas}
DATA="$DIR/data"
SOCK="$DIR/socket"

die() { echo "local_postgres.sh: $*" >&2; exit 2; }

[[ $ROLE =~ ^[a-z_][a-z0-9_]*$ ]] || die "EFFNAS_PG_USER must be lower-case letters, digits and '_', got '$ROLE'"
[[ $DB =~ ^[a-z_][a-z0-9_]*$ ]] || die "EFFNAS_PG_DB must be lower-case letters, digits and '_', got '$DB'"
[[ $DIR = /* && $DIR != *[[:space:]\'\"]* ]] || die "EFFNAS_PG_DIR must be an absolute path without spaces or quotes, got '$DIR'"

find_bin() {
    local initdb
    initdb=$(ls -1d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 || true)
    [[ -n $initdb ]] || initdb=$(command -v initdb || true)
    [[ -n $initdb ]] || die "PostgreSQL's initdb is not installed; on Debian or Ubuntu: apt-get install postgresql"
    PGBIN=$(dirname "$(readlink -f "$initdb")")
}

# Who runs the server: this user, or (as root) an unprivileged one.
server_user() {
    if [[ $(id -u) -ne 0 ]]; then
        SUSER=$(id -un)
        return
    fi
    SUSER=${EFFNAS_PG_OS_USER:-postgres}
    if ! id "$SUSER" >/dev/null 2>&1; then
        useradd --system --no-create-home --shell /usr/sbin/nologin "$SUSER" \
            || die "cannot create the user $SUSER to run the server"
    fi
}

as_server() {
    if [[ $(id -u) -ne 0 ]]; then
        "$@"
    else
        runuser -u "$SUSER" -- "$@"
    fi
}

running() { [[ -f $DATA/PG_VERSION ]] && as_server "$PGBIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

# A server killed without a chance to clean up leaves postmaster.pid behind; when its
# process is gone (or a zombie nobody reaped, as in some containers), the file goes too.
clear_dead_pid() {
    local pid state
    [[ -f $DATA/postmaster.pid ]] || return 0
    pid=$(head -n 1 "$DATA/postmaster.pid" 2>/dev/null || true)
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    state=$(ps -o stat= -p "$pid" 2>/dev/null || true)
    if [[ -z $state || $state == Z* ]]; then
        rm -f "$DATA/postmaster.pid"
    fi
}

port() { cat "$DIR/port"; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

port_busy() {
    python3 - "$1" <<'EOF'
import socket, sys
s = socket.socket()
# As the server binds: a port whose last connections are in TIME_WAIT is free to it, and a
# restart must keep its port (and so its URL) for the clients waiting on it.
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(0)
sys.exit(1)
EOF
}

url() {
    local password=""
    if [[ ${1:-} == --with-password ]]; then
        password=":$(cut -d: -f5- "$DIR/pgpass")"
    fi
    echo "postgresql+psycopg://$ROLE$password@127.0.0.1:$(port)/$DB"
}

initialise() {
    rm -rf "$DATA" "$SOCK" "$DIR/ready" "$DIR/port" "$DIR/pgpass"
    mkdir -p "$DIR"
    chmod 711 "$DIR"  # the server's user must get through to its folders
    mkdir -m 700 "$DATA" "$SOCK"
    if [[ $(id -u) -eq 0 ]]; then
        chown "$SUSER:" "$DATA" "$SOCK"
        as_server test -x "$DIR" || die "the user $SUSER cannot enter $DIR (a parent folder is private); set EFFNAS_PG_DIR to a folder under /tmp"
    fi
    as_server "$PGBIN/initdb" -D "$DATA" --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --no-locale \
        >"$DIR/initdb.log" 2>&1 || die "initdb failed; see $DIR/initdb.log"
    # Settings of this throwaway server (port and socket follow in effnas-port.conf at each start).
    as_server sh -c "cat >> '$DATA/postgresql.conf'" <<EOF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$SOCK'
synchronous_commit = off
max_connections = 200
include_if_exists = 'effnas-port.conf'
EOF
}

start_server() {
    local p
    p=$(cat "$DIR/port" 2>/dev/null || true)
    if [[ -z $p ]] || port_busy "$p"; then
        p=$(free_port)
    fi
    echo "port = $p" | as_server sh -c "cat > '$DATA/effnas-port.conf'"
    echo "$p" >"$DIR/port"
    touch "$DIR/server.log"
    [[ $(id -u) -ne 0 ]] || chown "$SUSER:" "$DIR/server.log"
    as_server "$PGBIN/pg_ctl" -D "$DATA" -l "$DIR/server.log" -w -t 60 start >/dev/null
}

create_role() {
    local password
    password=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
    # The password goes to psql on stdin, never on a command line.
    as_server "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$(port)" -d postgres >/dev/null <<EOF \
        || die "could not create the role $ROLE and database $DB; see $DIR/server.log"
CREATE ROLE $ROLE LOGIN PASSWORD '$password';
CREATE DATABASE $DB OWNER $ROLE;
EOF
    (umask 077 && echo "127.0.0.1:*:$DB:$ROLE:$password" >"$DIR/pgpass")
    touch "$DIR/ready"
}

start() {
    find_bin
    server_user
    clear_dead_pid
    if running && [[ -f $DIR/ready ]]; then
        :
    else
        if [[ -f $DIR/ready && -f $DATA/PG_VERSION ]]; then
            # Its studies are there: start it again, never start afresh over them.
            start_server || die "the server in $DATA did not start; see $DIR/server.log (or delete it: $0 clean)"
        else
            # Nothing there, or a folder left half made: start afresh.
            if running; then
                as_server "$PGBIN/pg_ctl" -D "$DATA" -m immediate stop >/dev/null 2>&1 || true
            fi
            initialise
            start_server || die "the server did not start; see $DIR/server.log"
            create_role
        fi
    fi
    url
    cat >&2 <<EOF
PostgreSQL ($("$PGBIN/pg_ctl" --version | awk '{print $3}')) is running on 127.0.0.1:$(port), data in $DATA, log $DIR/server.log.
Give the password through the environment, not the command line:
  export PGPASSFILE=$DIR/pgpass
  nas search ... --storage $(url) --study NAME
Stop it with: $0 stop  (delete it: $0 clean)
EOF
}

stop() {
    find_bin
    server_user
    if running; then
        as_server "$PGBIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null \
            || as_server "$PGBIN/pg_ctl" -D "$DATA" -m immediate stop >/dev/null
    fi
}

case "${1:-}" in
    start) start ;;
    stop) [[ -d $DIR ]] && stop; true ;;
    clean)
        if [[ -d $DIR ]]; then
            stop
            rm -rf "$DIR"
        fi
        ;;
    status)
        find_bin
        server_user
        if running; then
            echo "running on 127.0.0.1:$(port), data in $DATA"
        else
            echo "not running"
            exit 1
        fi
        ;;
    url)
        [[ -f $DIR/ready ]] || die "no server in $DIR; run: $0 start"
        url "${2:-}"
        ;;
    pgpass)
        [[ -f $DIR/ready ]] || die "no server in $DIR; run: $0 start"
        echo "$DIR/pgpass"
        ;;
    *)
        echo "usage: $0 start|stop|clean|status|url [--with-password]|pgpass" >&2
        exit 2
        ;;
esac
