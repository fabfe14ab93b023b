#!/bin/sh
# A node of the compose file's Kafka cluster (KRaft, broker and controller in one process)
# that authenticates every client with SASL/SCRAM over TLS and authorises it by ACL (Kafka's
# standard authorizer). The same settings as a node of deploy/stack.py's local cluster (a
# test compares them) but for TLS, which the local brokers on loopback go without. Its
# secrets are files in /run/secrets. Only the superuser exists at first; access.sh adds the
# ledger's principals.
#   KAFKA_NODE_ID, KAFKA_HOST (its name on the network), KAFKA_VOTERS (every node's
#   id@host:9093), KAFKA_REPLICAS (copies of each partition: the number of nodes)
set -eu
node=${KAFKA_NODE_ID:-1}
host=${KAFKA_HOST:-kafka}
voters=${KAFKA_VOTERS:-1@kafka:9093}
replicas=${KAFKA_REPLICAS:-1}
# A write counts once two copies hold it (acks=all): one node may be lost, nothing with it.
in_sync=$((replicas < 2 ? replicas : 2))
secrets=/run/secrets
KAFKA_SUPERUSER_PASSWORD=$(cat "$secrets/kafka_superuser_password")
umask 077 # the files below hold the superuser's password and the broker's key
config=/tmp/server.properties
# Kafka reads a PEM key store as the key followed by its certificate, in one file.
cat "$secrets/kafka_tls_key" "$secrets/kafka_tls_cert" >/tmp/keystore.pem
user="username=\"kafka\" password=\"$KAFKA_SUPERUSER_PASSWORD\""
cat >"$config" <<END
process.roles=broker,controller
node.id=$node
controller.quorum.voters=$voters
listeners=CLIENTS://:9092,CONTROLLER://:9093
advertised.listeners=CLIENTS://$host:9092
controller.listener.names=CONTROLLER
inter.broker.listener.name=CLIENTS
listener.security.protocol.map=CLIENTS:SASL_SSL,CONTROLLER:SASL_SSL
ssl.keystore.type=PEM
ssl.keystore.location=/tmp/keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=$secrets/ca_cert
ssl.endpoint.identification.algorithm=https
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.clients.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required $user;
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required $user user_kafka="$KAFKA_SUPERUSER_PASSWORD";
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:kafka
log.dirs=/var/lib/kafka/data
auto.create.topics.enable=false
default.replication.factor=$replicas
min.insync.replicas=$in_sync
unclean.leader.election.enable=false
offsets.topic.replication.factor=$replicas
transaction.state.log.replication.factor=$replicas
transaction.state.log.min.isr=$in_sync
share.coordinator.state.topic.replication.factor=$replicas
share.coordinator.state.topic.min.isr=$in_sync
group.initial.rebalance.delay.ms=0
log.retention.ms=-1
END
# For the health check, as the superuser.
cat >/tmp/superuser.properties <<END
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required $user;
ssl.truststore.type=PEM
ssl.truststore.location=$secrets/ca_cert
END

# The superuser's credentials must exist before the broker starts; a formatted volume is kept.
# Kafka's own format tool, given its arguments in a file java reads them from (@file), so
# that the password is never on a command line, where any process of the host could read it.
arguments=/tmp/format.args
printf '%s\n' kafka.tools.StorageTool format --ignore-formatted -t "$CLUSTER_ID" -c "$config" \
  --add-scram "SCRAM-SHA-512=[name=kafka,password=$KAFKA_SUPERUSER_PASSWORD]" >"$arguments"
"${JAVA_HOME:+$JAVA_HOME/bin/}java" -cp '/opt/kafka/libs/*' "@$arguments"
rm -f "$arguments"
exec /opt/kafka/bin/kafka-server-start.sh "$config"
