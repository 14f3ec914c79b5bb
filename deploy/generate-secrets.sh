#!/bin/sh
# Writes what docker-compose.yml reads, next to this script, with fresh random secrets:
#   .env                     database passwords, the uid:gid Synapse and Kanal run as, Caddy's site (0600)
#   kanal/config.yaml        Kanal's config: tokens, listen addresses, database URL, web.public_url (0600)
#   kanal/registration.yaml  the application service registration Synapse loads             (0600)
#   synapse/homeserver.yaml  Synapse's config: database password, secrets, the registration  (0600)
#   synapse/conf.d/          more of Synapse's config, read after homeserver.yaml; with --workers,
#                            workers.yaml (Redis, event persisters, replication secret)    (0600)
#   synapse/workers/         with --workers: each worker's own config file                  (0600)
#   element/config.json      Element Web's config, no secrets (0644: its web server runs as another user)
#
# Usage: ./generate-secrets.sh [--force] [--workers] DOMAIN [PUBLIC_BASEURL]
#   DOMAIN          the homeserver's server_name, the part after the colon in @alice:DOMAIN
#   PUBLIC_BASEURL  where clients reach Synapse and readers reach Kanal's pages, through Caddy, e.g.
#                   https://matrix.example.org (default: https://localhost, for trying it out on this
#                   machine with Caddy's own local certificate authority)
#   --workers       Synapse in worker mode (.env turns the `workers` profile on; Kanal reaches Synapse
#                   through Caddy's worker routing): deploy/README.md, "Synapse's workers"
#
# It refuses to replace existing files without --force: new tokens need Synapse and Kanal restarted,
# and a new database password does not reach an already initialised PostgreSQL volume.
# It prints file names only, never a secret.
set -eu
umask 077

die() {
    printf 'generate-secrets.sh: %s\n' "$1" >&2
    exit 2
}

force=0
workers=0
while [ $# -gt 0 ]; do
    case $1 in
        --force) force=1 ;;
        --workers) workers=1 ;;
        *) break ;;
    esac
    shift
done
[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: generate-secrets.sh [--force] [--workers] DOMAIN [PUBLIC_BASEURL]"
domain=$1
public_baseurl=${2:-https://localhost}
case $domain in
    '' | *[!A-Za-z0-9.:-]* | [.:-]*) die "DOMAIN must be a server name such as example.org, got '$domain'" ;;
esac
case $public_baseurl in
    *[!A-Za-z0-9.:/_-]*) die "PUBLIC_BASEURL must be a plain URL such as https://matrix.example.org, got '$public_baseurl'" ;;
    http://?* | https://?*) ;;
    *) die "PUBLIC_BASEURL must start with http:// or https://, got '$public_baseurl'" ;;
esac
public_baseurl=${public_baseurl%/}
case $public_baseurl in
    *://*/*) die "PUBLIC_BASEURL must be a site without a path, such as https://matrix.example.org, got '$public_baseurl'" ;;
esac
# The host alone (no scheme, no port): Caddy's federation site on 8448.
public_host=${public_baseurl#*://}
public_host=${public_host%%:*}

cd "$(dirname "$0")"
for file in .env kanal/config.yaml kanal/registration.yaml synapse/homeserver.yaml synapse/conf.d/workers.yaml \
    element/config.json; do
    if [ -e "$file" ] && [ "$force" -eq 0 ]; then
        die "$(pwd)/$file already exists; pass --force to replace every file (new secrets)"
    fi
done

# 32 random bytes as 64 hex digits: safe unquoted in URLs, YAML and SQL.
secret() {
    od -An -N32 -tx1 /dev/urandom | tr -d ' \n'
}

# Containers run as the operator's uid, so both read these 0600 files; root gets the image's kanal user.
run_uid=$(id -u)
run_gid=$(id -g)
if [ "$run_uid" -eq 0 ]; then
    run_uid=10001
    run_gid=10001
fi

postgres_password=$(secret)
kanal_db_password=$(secret)
as_token=$(secret)
hs_token=$(secret)
registration_shared_secret=$(secret)
macaroon_secret_key=$(secret)
form_secret=$(secret)
replication_secret=$(secret)
# The namespace regexes escape the domain as Python's re.escape does (as `kanal init` writes them).
domain_re=$(printf '%s' "$domain" | sed 's/[.-]/\\&/g')

mkdir -p kanal synapse synapse/conf.d
mkdir -p -m 0755 element
# Caddy sends the client paths Synapse's workers documentation lists to the generic worker, for
# Matrix apps (the public site) and for Kanal (Caddy's internal site, caddy:8009, which Kanal's
# homeserver.url names in worker mode); without workers Kanal talks to Synapse straight.
if [ "$workers" -eq 1 ]; then
    synapse_client_upstream=synapse-client-worker1:8083
    kanal_homeserver_url=http://caddy:8009
    compose_profiles=workers
else
    synapse_client_upstream=synapse:8008
    kanal_homeserver_url=http://synapse:8008
    compose_profiles=
fi

cat >.env <<EOF
# Written by generate-secrets.sh; holds secrets. docker compose reads it.
POSTGRES_PASSWORD=$postgres_password
KANAL_DB_PASSWORD=$kanal_db_password
RUN_UID=$run_uid
RUN_GID=$run_gid
# Caddy (Caddyfile): the site it serves with TLS, its host name, and where Synapse's client paths go.
KANAL_SITE=$public_baseurl
KANAL_HOST=$public_host
SYNAPSE_CLIENT_UPSTREAM=$synapse_client_upstream
EOF
if [ -n "$compose_profiles" ]; then
    cat >>.env <<EOF
# Synapse's workers (and Redis) start, are recreated and updated with every docker compose command.
# Add element for Element Web: COMPOSE_PROFILES=workers,element
COMPOSE_PROFILES=$compose_profiles
EOF
fi

cat >kanal/config.yaml <<EOF
# Kanal's configuration for docker-compose.yml, written by generate-secrets.sh.
# Every key is documented in config.example.yaml.
homeserver:
  url: $kanal_homeserver_url
  domain: "$domain"
appservice:
  id: kanal
  listen: 0.0.0.0:29340
  url: http://kanal:29340
  registration: registration.yaml
  as_token: $as_token
  hs_token: $hs_token
  bot_localpart: kanal
  ghost_prefix: kanal_
database:
  url: postgresql://kanal:$kanal_db_password@postgres:5432/kanal
# The public web face (channel pages, the publishing API, invite links) behind Caddy, which serves
# it on PUBLIC_BASEURL with TLS: see deploy/README.md, "What is exposed to whom".
web:
  listen: 0.0.0.0:29341
  public_url: $public_baseurl
  # Caddy connects from the compose network, whose private range Docker (or Podman) picks; the web
  # port is not published, so only this project's containers reach it. Their X-Forwarded-For (Caddy
  # writes the reader's address there) is believed: /join's limits are per reader, not per Caddy.
  trusted_proxies: [127.0.0.0/8, "::1", 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, "fc00::/7"]
channels:
  creation_policy: open
  default_language: en
logging:
  level: INFO
  format: text
EOF

cat >kanal/registration.yaml <<EOF
id: kanal
url: http://kanal:29340
as_token: $as_token
hs_token: $hs_token
sender_localpart: kanal
namespaces:
  users:
  - exclusive: true
    regex: '^@kanal:$domain_re\$'
  - exclusive: true
    regex: '^@kanal_.+:$domain_re\$'
  aliases:
  - exclusive: false
    regex: '^#.+:$domain_re\$'
  rooms: []
rate_limited: false
receive_ephemeral: true
de.sorunome.msc2409.push_ephemeral: true
EOF

cat >synapse/homeserver.yaml <<EOF
# Synapse's configuration for docker-compose.yml, written by generate-secrets.sh.
# Reference: https://element-hq.github.io/synapse/latest/usage/configuration/config_documentation.html
server_name: "$domain"
public_baseurl: "$public_baseurl/"
report_stats: false
pid_file: /data/homeserver.pid
listeners:
  - port: 8008
    bind_addresses: ["0.0.0.0"]
    type: http
    tls: false
    x_forwarded: true
    resources:
      - names: [client, federation]
        compress: false
database:
  name: psycopg2
  args:
    user: synapse
    password: $postgres_password
    dbname: synapse
    host: postgres
    port: 5432
    cp_min: 5
    cp_max: 10
media_store_path: /data/media_store
signing_key_path: /data/signing.key
registration_shared_secret: $registration_shared_secret
macaroon_secret_key: $macaroon_secret_key
form_secret: $form_secret
enable_registration: false
# No notary: Synapse fetches each server's signing keys from that server (no third party learns
# whom this server federates with). List a notary here, e.g. matrix.org, to use one.
trusted_key_servers: []
app_service_config_files:
  - /kanal/registration.yaml
# Without this Synapse silently refuses to publish channels in the room directory.
room_list_publication_rules:
  - action: allow
# Kanal reads no encrypted message: new rooms are encrypted only when their creator asks (clients
# still encrypt the chats people open with each other). \`invite\` or \`all\` would encrypt the chats
# with the bot and the backstage rooms, and nothing could be created or published.
encryption_enabled_by_default_for_room_type: "off"
# Big channels: Synapse reads these caches for every member of a room on each post. These factors
# hold rooms of 10,000 members (Kanal's channels.shard_size); \`kanal doctor\` says when they do not.
caches:
  per_cache_factors:
    get_push_rules_for_user: 2
    get_user_in_room_with_profile: 10
EOF

rm -f synapse/conf.d/workers.yaml
if [ "$workers" -eq 1 ]; then
    mkdir -p synapse/workers
    # Read by every Synapse process after homeserver.yaml (docker-compose.yml: --config-path=/data/conf.d).
    cat >synapse/conf.d/workers.yaml <<EOF
# Worker mode, written by generate-secrets.sh --workers (Synapse's documentation, "Workers").
# The main process keeps its client listener and adds one for replication.
listeners:
  - port: 8008
    bind_addresses: ["0.0.0.0"]
    type: http
    tls: false
    x_forwarded: true
    resources:
      - names: [client, federation]
        compress: false
  - port: 9093
    bind_addresses: ["0.0.0.0"]
    type: http
    resources:
      - names: [replication]
redis:
  enabled: true
  host: redis
  port: 6379
instance_map:
  main:
    host: synapse
    port: 9093
  event_persister1:
    host: synapse-event-persister1
    port: 9091
  event_persister2:
    host: synapse-event-persister2
    port: 9092
# Rooms are spread over the event persisters by a hash of their id, so a channel's rooms (shards)
# are written in parallel (docs/SCALE.md).
stream_writers:
  events:
    - event_persister1
    - event_persister2
worker_replication_secret: $replication_secret
EOF
    for worker in event_persister1:9091:replication event_persister2:9092:replication client_worker1:8083:client; do
        name=${worker%%:*}
        rest=${worker#*:}
        cat >"synapse/workers/$name.yaml" <<EOF
worker_app: synapse.app.generic_worker
worker_name: $name
worker_listeners:
  - type: http
    port: ${rest%%:*}
    bind_addresses: ["0.0.0.0"]
    x_forwarded: true
    resources:
      - names: [${rest#*:}]
        compress: false
EOF
        chmod 0600 "synapse/workers/$name.yaml"
    done
    chmod 0600 synapse/conf.d/workers.yaml
fi

cat >element/config.json <<EOF
{
  "default_server_config": {
    "m.homeserver": {"base_url": "$public_baseurl", "server_name": "$domain"}
  },
  "disable_guests": true
}
EOF
chmod 0600 .env kanal/config.yaml kanal/registration.yaml synapse/homeserver.yaml
chmod 0644 element/config.json

if [ "$(id -u)" -eq 0 ]; then
    chown -R "$run_uid:$run_gid" kanal synapse
fi

printf 'Wrote %s/.env, kanal/config.yaml, kanal/registration.yaml, synapse/homeserver.yaml and element/config.json.\n' "$(pwd)"
if [ "$workers" -eq 1 ]; then
    printf 'Synapse in worker mode: synapse/conf.d/workers.yaml and synapse/workers/.\n'
    printf 'Synapse and Kanal will run as uid %s. Next: docker compose up -d --build (.env turns the workers profile on)\n' "$run_uid"
else
    printf 'Synapse and Kanal will run as uid %s. Next: docker compose up -d --build\n' "$run_uid"
fi
