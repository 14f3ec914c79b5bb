#!/bin/sh
# Runs once, when the postgres volume is first initialised (docker-entrypoint-initdb.d):
# Kanal's own role and database beside Synapse's. The cluster uses C collation, as Synapse requires.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    --set=password="${KANAL_DB_PASSWORD:?KANAL_DB_PASSWORD is not set}" <<'SQL'
CREATE ROLE kanal LOGIN PASSWORD :'password';
CREATE DATABASE kanal OWNER kanal;
SQL
