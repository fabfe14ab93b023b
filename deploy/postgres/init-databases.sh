#!/bin/bash
# First start of the compose PostgreSQL (deploy/postgres/start.sh runs it): each service gets
# its own role and its own database, owned by that role, which no other role may connect to.
# The services migrate their databases themselves when they start. Each role's password is
# the file <service>_db_password in $POSTGRES_SECRETS; psql reads it from its environment
# (\getenv), never from its command line, where any process of the host could read it.
set -euo pipefail
secrets=${POSTGRES_SECRETS:-/run/secrets}

for service in allocation spending approval reporting; do
  file="$secrets/${service}_db_password"
  [ -s "$file" ] || { echo "$file is missing or empty" >&2; exit 1; }
  LEDGER_ROLE_PASSWORD=$(cat "$file") \
    psql --set ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    --set name="ledger_${service}" <<'SQL'
\getenv password LEDGER_ROLE_PASSWORD
CREATE ROLE :"name" LOGIN PASSWORD :'password';
CREATE DATABASE :"name" OWNER :"name";
REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
SQL
done
