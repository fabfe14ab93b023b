#!/bin/sh
# The compose file's PostgreSQL, on any Debian image with PostgreSQL 15 (postgres:15-bookworm,
# or the one `make compose-test` makes where no registry can be reached). Its secrets are
# files in /run/secrets. The first start makes the cluster (the superuser's password from its
# secret) and each service's role and database (init-databases.sh); every start then serves
# TCP over TLS alone, with a password, and the socket to the superuser as itself.
set -eu
bin=/usr/lib/postgresql/15/bin
export PATH="$bin:$PATH"
data=${PGDATA:-/var/lib/postgresql/data}
secrets=/run/secrets
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }

# The server reads its key only if the key is its own and no one else's (mode 600); the
# secret's file belongs to the host, so it is copied.
tls=/var/lib/postgresql/tls
install -d -o postgres -g postgres -m 700 "$tls"
install -o postgres -g postgres -m 600 "$secrets/postgres_tls_key" "$tls/server.key"
install -o postgres -g postgres -m 644 "$secrets/postgres_tls_cert" "$tls/server.crt"
install -d -o postgres -g postgres -m 2775 /var/run/postgresql
# Continuous archiving: each segment once full, never over one already archived (an
# operator bounds what a restore may lose with ALTER SYSTEM SET archive_timeout).
archive=/var/lib/postgresql/archive
install -d -o postgres -g postgres -m 700 "$archive"

if [ ! -s "$data/PG_VERSION" ]; then
  install -d -o postgres -g postgres -m 700 "$data"
  as_postgres initdb --pgdata="$data" --username=postgres --pwfile="$secrets/postgres_password" \
    --encoding=UTF8 --locale=C.UTF-8 --auth-local=peer --auth-host=scram-sha-256
  cat >"$data/pg_hba.conf" <<END
# Over the socket only the superuser, as the operating system's postgres (backups, psql).
local all postgres peer
# Over TCP, TLS and a password, always; a connection without TLS matches nothing.
hostssl all all 0.0.0.0/0 scram-sha-256
hostssl all all ::/0 scram-sha-256
END
  as_postgres pg_ctl --pgdata="$data" --options="-c listen_addresses=''" --wait start
  as_postgres env POSTGRES_USER=postgres POSTGRES_SECRETS="$secrets" \
    bash /ledger/init-databases.sh
  as_postgres pg_ctl --pgdata="$data" --mode=fast --wait stop
fi

exec setpriv --reuid=postgres --regid=postgres --init-groups postgres -D "$data" \
  -c listen_addresses='*' -c password_encryption=scram-sha-256 \
  -c ssl=on -c ssl_min_protocol_version=TLSv1.2 \
  -c ssl_cert_file="$tls/server.crt" -c ssl_key_file="$tls/server.key" \
  -c archive_mode=on \
  -c archive_command="test ! -f $archive/%f && cp %p $archive/%f"
