"""The live path: the graph hosted on Kafka topics (``docs/live.md``).

``wire`` is the record format on the broker; ``host`` drives the runtime core from a Kafka
consumer and a transactional producer; the rest are the user tools (``broker``, ``topics
create``, ``produce-ticks``, ``tail``, ``kill-switch``). confluent-kafka is an extra
(``pip install 'streamquant[kafka]'``): importing these modules without it fails with a clear
message from ``jobs.live.kafka_client``.
"""
