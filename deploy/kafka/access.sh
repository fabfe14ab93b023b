#!/bin/sh
# Made by `python deploy/stack.py access-script` from shared.web.registry.kafka_grants (a test
# checks it is current). Gives the ledger's principals their SCRAM credentials and only their
# ACLs; run as the broker's superuser. Idempotent: a user that has a password keeps it (set
# KAFKA_RESET_PASSWORDS=yes to give every user the password given here), missing ACLs are added.
# A password is its variable's value or, where secrets are files (compose), the file
# $KAFKA_SECRETS/<the variable's name in lower case>. With KAFKA_CA_FILE, over TLS.
set -eu
bin=${KAFKA_BIN:-/opt/kafka/bin}
secret() {
  eval "value=\${$1:-}"
  if [ -z "$value" ] && [ -n "${KAFKA_SECRETS:-}" ]; then
    value=$(cat "$KAFKA_SECRETS/$(echo "$1" | tr '[:upper:]' '[:lower:]')")
  fi
  if [ -z "$value" ]; then echo "$1 is not set" >&2; exit 1; fi
}
secret KAFKA_SUPERUSER_PASSWORD
protocol=SASL_PLAINTEXT
if [ -n "${KAFKA_CA_FILE:-}" ]; then protocol=SASL_SSL; fi
config=$(mktemp)
trap 'rm -f "$config"' EXIT
cat >"$config" <<END
security.protocol=$protocol
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \
  username="kafka" password="$value";
END
if [ -n "${KAFKA_CA_FILE:-}" ]; then
  printf 'ssl.truststore.type=PEM\nssl.truststore.location=%s\n' "$KAFKA_CA_FILE" >>"$config"
fi
# A password goes to the tool in a file only its owner reads, never on a command line.
given=$(mktemp)
known=$(mktemp)
trap 'rm -f "$config" "$given" "$known"' EXIT
# Every user that has credentials, asked once (each run of a Kafka tool starts a JVM).
"$bin/kafka-configs.sh" --bootstrap-server "$KAFKA_BOOTSTRAP" --command-config "$config" \
  --describe --entity-type users >"$known"
user() {
  secret "$2"
  if [ "${KAFKA_RESET_PASSWORDS:-no}" != yes ] \
    && grep -q "user-principal '$1' are .*SCRAM-SHA-512=" "$known"; then
    echo "$1 has a password already: kept"
    return
  fi
  (umask 077 && printf '%s=password=%s\n' SCRAM-SHA-512 "$value" >"$given")
  "$bin/kafka-configs.sh" --bootstrap-server "$KAFKA_BOOTSTRAP" --command-config "$config" \
    --alter --add-config-file "$given" --entity-type users --entity-name "$1"
}
acls() {
  "$bin/kafka-acls.sh" --bootstrap-server "$KAFKA_BOOTSTRAP" --command-config "$config" "$@"
}
user admin ADMIN_KAFKA_PASSWORD
user allocation ALLOCATION_KAFKA_PASSWORD
user spending SPENDING_KAFKA_PASSWORD
user approval APPROVAL_KAFKA_PASSWORD
user reporting REPORTING_KAFKA_PASSWORD
acls --add --allow-principal User:allocation --operation Write --operation Describe --topic "${LEDGER_TOPIC_PREFIX:-}ledger.allocation" --topic "${LEDGER_TOPIC_PREFIX:-}ledger.deadletter" --transactional-id "${LEDGER_TOPIC_PREFIX:-}ledger-relay-allocation"
acls --add --allow-principal User:allocation --operation Read --operation Describe --topic "${LEDGER_TOPIC_PREFIX:-}ledger.spending" --topic "${LEDGER_TOPIC_PREFIX:-}ledger.approval"
acls --add --allow-principal User:allocation --operation Read --operation Describe --group "${LEDGER_TOPIC_PREFIX:-}allocation." --resource-pattern-type prefixed
acls --add --allow-principal User:spending --operation Write --operation Describe --topic "${LEDGER_TOPIC_PREFIX:-}ledger.spending" --topic "${LEDGER_TOPIC_PREFIX:-}ledger.deadletter" --transactional-id "${LEDGER_TOPIC_PREFIX:-}ledger-relay-spending"
acls --add --allow-principal User:spending --operation Read --operation Describe --topic "${LEDGER_TOPIC_PREFIX:-}ledger.allocation" --topic "${LEDGER_TOPIC_PREFIX:-}ledger.approval"
acls --add --allow-principal User:spending --operation Read --operation Describe --group "${LEDGER_TOPIC_PREFIX:-}spending." --resource-pattern-type prefixed
acls --add --allow-principal User:approval --operation Write --operation Describe --topic "${LEDGER_TOPIC_PREFIX:-}ledger.approval" --topic "${LEDGER_TOPIC_PREFIX:-}ledger.deadletter" --transactional-id "${LEDGER_TOPIC_PREFIX:-}ledger-relay-approval"
acls --add --allow-principal User:approval --operation Read --operation Describe --topic "${LEDGER_TOPIC_PREFIX:-}ledger.allocation" --topic "${LEDGER_TOPIC_PREFIX:-}ledger.spending"
acls --add --allow-principal User:approval --operation Read --operation Describe --group "${LEDGER_TOPIC_PREFIX:-}approval." --resource-pattern-type prefixed
acls --add --allow-principal User:reporting --operation Write --operation Describe --topic "${LEDGER_TOPIC_PREFIX:-}ledger.deadletter"
acls --add --allow-principal User:reporting --operation Read --operation Describe --topic "${LEDGER_TOPIC_PREFIX:-}ledger.allocation" --topic "${LEDGER_TOPIC_PREFIX:-}ledger.spending" --topic "${LEDGER_TOPIC_PREFIX:-}ledger.approval"
acls --add --allow-principal User:reporting --operation Read --operation Describe --group "${LEDGER_TOPIC_PREFIX:-}reporting." --resource-pattern-type prefixed
acls --add --allow-principal User:admin --operation Create --operation Describe --operation Read --topic "${LEDGER_TOPIC_PREFIX:-}ledger." --resource-pattern-type prefixed
