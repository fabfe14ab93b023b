#!/bin/bash
# First start of the compose PostgreSQL: each service gets its own role and its own database,
# owned by that role, which no other role may connect to. The services migrate their
# databases themselves when they start. A password is read by psql from the environment
# (\getenv), never passed on its command line, where any process of the host could read it.
set -euo pipefail

for service in allocation spending approval reporting; do
  variable="${service^^}_DB_PASSWORD"
  : "${!variable:?$variable must be set}"
  psql --set ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    --set name="ledger_${service}" --set variable="$variable" <<'SQL'
\getenv password :variable
CREATE ROLE :"name" LOGIN PASSWORD :'password';
CREATE DATABASE :"name" OWNER :"name";
REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
SQL
done
