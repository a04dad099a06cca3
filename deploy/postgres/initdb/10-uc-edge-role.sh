#!/bin/bash
# Runs once, when the PostgreSQL data volume is first initialised (postgres image's initdb hook).
# Creates the role uc-edge connects as; CREATEDB because `uc-edge migrate` creates one database per
# domain (uc_accounts, uc_calls, uc_cdr, uc_conferences). The password comes from the environment so
# it is not baked into a file.
set -euo pipefail

psql --variable=ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    --set=role_password="${UC_EDGE_DB_PASSWORD:?set UC_EDGE_DB_PASSWORD}" <<'SQL'
CREATE ROLE uc_edge LOGIN CREATEDB PASSWORD :'role_password';
SQL
