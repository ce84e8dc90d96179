"""charts/hymirec hardening with the real helm CLI: the API-key Secret reaches serving as serving.config reads it,
NetworkPolicies (serving from the ingress namespaces only, Triton from serving and the pipeline only, stream egress
to Kafka/Redis/DNS only) and PodDisruptionBudgets for every workload."""
from __future__ import annotations

import pytest

from tests.charts.test_chart import NAME, SERVING, STREAM, TRITON, container, env_of

SELECTOR = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/instance": NAME}


def selector(component: str) -> dict:
    return {**SELECTOR, "app.kubernetes.io/component": component}


@pytest.fixture(params=["default", "production"])
def render(request):
    return request.getfixturevalue(f"{request.param}_render")


# ------------------------------------------------------------------------------------------ API keys

def test_serving_gets_the_api_key_secret_as_a_directory(render):
    deployment = render.get("Deployment", SERVING)
    c = container(render, SERVING, "serving")
    env = env_of(c)
    assert env["HYMIREC_AUTH"] == "required" and env["HYMIREC_API_KEYS_FILE"] == "/etc/hymirec/api-keys"
    mount = next(m for m in c["volumeMounts"] if m["name"] == "api-keys")
    assert mount == {"name": "api-keys", "mountPath": "/etc/hymirec/api-keys", "readOnly": True}
    assert "subPath" not in mount  # a subPath mount would never see a rotated key
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "api-keys")
    assert volume["secret"] == {"secretName": "hymirec-api-keys", "defaultMode": 0o440}
    assert not any("API_KEYS" in e["name"] and "value" in e and e["name"] != "HYMIREC_API_KEYS_FILE"
                   for e in c["env"])  # keys never travel as plain env values


def test_chart_env_is_what_serving_config_reads(production_render, production_values):
    """The rendered env, fed to ServingConfig.from_env, gives the values' guard settings."""
    from serving.config import ServingConfig

    env = {k: v for k, v in env_of(container(production_render, SERVING, "serving")).items() if isinstance(v, str)}
    cfg = ServingConfig.from_env(env)
    s = production_values["serving"]
    assert cfg.auth == "required" and cfg.api_keys_file == "/etc/hymirec/api-keys" and cfg.host == "0.0.0.0"
    assert cfg.rate_limit_rps == s["rateLimit"]["requestsPerSecond"] and cfg.rate_limit_burst == s["rateLimit"]["burst"]
    assert cfg.max_body_bytes == 65536 and cfg.auth_enabled()


def test_auth_needs_a_secret_or_an_explicit_off(helm):
    err = helm.template_error(set_values=["serving.auth.existingSecret="])
    assert "serving.auth.existingSecret must name the Secret" in err
    assert "serving.auth.mode must be required or off" in helm.template_error(set_values=["serving.auth.mode=maybe"])
    off = helm.template(set_values=["serving.auth.mode=off", "serving.auth.existingSecret="])
    c = container(off, SERVING, "serving")
    assert env_of(c)["HYMIREC_AUTH"] == "off" and "HYMIREC_API_KEYS_FILE" not in env_of(c)
    assert not any(m["name"] == "api-keys" for m in c["volumeMounts"])


def test_prometheus_sends_the_metrics_token(production_render):
    monitors = {m["metadata"]["name"]: m for m in production_render.of_kind("ServiceMonitor")}
    endpoint = monitors[SERVING]["spec"]["endpoints"][0]
    assert endpoint["authorization"] == {"type": "Bearer",
                                         "credentials": {"name": "hymirec-api-keys", "key": "metrics-token"}}
    assert "authorization" not in monitors[TRITON]["spec"]["endpoints"][0]


# ------------------------------------------------------------------------------------------ NetworkPolicies

def policy(render, name):
    p = render.get("NetworkPolicy", name)
    return p["spec"]


def test_serving_reachable_from_the_ingress_namespace_only(default_render, helm):
    spec = policy(default_render, SERVING)
    assert spec["podSelector"]["matchLabels"] == selector("serving") and spec["policyTypes"] == ["Ingress"]
    [rule] = spec["ingress"]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    other = policy(helm.template(set_values=["networkPolicy.serving.ingressNamespaces={gateway,edge}"]), SERVING)
    names = [p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for p in other["ingress"][0]["from"]]
    assert names == ["gateway", "edge"]


@pytest.mark.parametrize("which", ["default", "production"])
def test_triton_reachable_from_serving_and_the_pipeline_only(request, which):
    render, values = request.getfixturevalue(f"{which}_render"), request.getfixturevalue(f"{which}_values")
    spec = policy(render, TRITON)
    assert spec["podSelector"]["matchLabels"] == selector("triton") and spec["policyTypes"] == ["Ingress"]
    api = spec["ingress"][0]
    assert api["from"] == [{"podSelector": {"matchLabels": selector("serving")}},
                           *values["networkPolicy"]["triton"]["pipelineFrom"]]
    assert {p["port"] for p in api["ports"]} == {"http", "grpc"}
    for rule in spec["ingress"]:
        assert rule.get("from"), "a rule without `from` would admit every pod"
    assert len(spec["ingress"]) == (2 if values["networkPolicy"].get("metricsFrom") else 1)
    for rule in spec["ingress"][1:]:  # Prometheus (production) gets the metrics port, not the model-control API
        assert [p["port"] for p in rule["ports"]] == ["metrics"]


def test_stream_egress_only_to_kafka_redis_and_dns(default_render, production_render):
    for render, kafka_ns in ((default_render, None), (production_render, "kafka")):
        spec = policy(render, STREAM)
        assert spec["podSelector"]["matchLabels"] == selector("stream") and spec["policyTypes"] == ["Egress"]
        kafka, redis, dns, *extra = spec["egress"]
        assert kafka["ports"] == [{"port": 9092, "protocol": "TCP"}]
        assert redis["ports"] == [{"port": 6379, "protocol": "TCP"}]
        assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}
        assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
        for rule in spec["egress"]:
            assert rule["ports"], "a rule without ports would open every port"
        if kafka_ns:
            assert kafka["to"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == kafka_ns
            assert [p["port"] for p in extra[0]["ports"]] == [5432]  # the SQL Feast registry
        else:
            assert not extra


def test_kafka_ports_come_from_the_bootstrap_servers(helm):
    render = helm.template(set_values=["externalKafka.bootstrapServers=a:9093\\,b:9094\\,c:9093\\,d"])
    ports = [p["port"] for p in policy(render, STREAM)["egress"][0]["ports"]]
    assert ports == [9093, 9094, 9092]


def test_network_policies_can_be_turned_off(helm):
    assert not helm.template(set_values=["networkPolicy.enabled=false"]).of_kind("NetworkPolicy")


# ------------------------------------------------------------------------------------------ disruption budgets

def test_every_workload_has_a_disruption_budget_that_allows_a_drain(render):
    budgets = {p["metadata"]["name"]: p["spec"] for p in render.of_kind("PodDisruptionBudget")}
    for name, component in ((SERVING, "serving"), (STREAM, "stream"), (TRITON, "triton")):
        spec = budgets[name]
        assert spec["selector"]["matchLabels"] == selector(component)
        # The budget selects exactly the workload's pods.
        pods = render.get("Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert selector(component).items() <= pods.items()
        # maxUnavailable >= 1: a one-replica Triton or stream can still be drained (minAvailable 1 would block).
        assert spec.get("maxUnavailable", 0) >= 1 and "minAvailable" not in spec


# ------------------------------------------------------------------------------------------ Redis timeouts

def test_redis_timeouts_reach_both_config_files(render):
    import yaml

    from features.store.config import StoreConfig
    from features.store.feast_redis import connection_string

    data = render.get("ConfigMap", f"{NAME}-feast")["data"]
    store = yaml.safe_load(data["store.yaml"])
    feast = yaml.safe_load(data["feature_store.yaml"])["online_store"]["connection_string"]
    assert store["redis_url"] == feast and feast.endswith(",socket_timeout=2,socket_connect_timeout=2")
    # The processor and serving keep the chart's timeouts instead of appending their defaults a second time.
    assert connection_string(StoreConfig.from_mapping(store)) == feast


# ------------------------------------------------------------------------------------------ Kafka link security

def test_kafka_sasl_ssl_reaches_the_stream_processor_from_secrets(helm):
    """SASL_SSL: mechanism and protocol as values, user and password only as secretKeyRefs, the CA from a
    Secret mounted read-only; the env names are the ones features.kafka_security reads."""
    from features.kafka_security import ENV
    out = helm.template(set_values=["externalKafka.security.protocol=SASL_SSL",
                                    "externalKafka.security.existingSecret=kafka-user",
                                    "externalKafka.security.caSecret=kafka-ca"])
    c = container(out, STREAM, "stream")
    env = {e["name"]: e for e in c["env"]}
    assert env[ENV["protocol"]]["value"] == "SASL_SSL" and env[ENV["sasl_mechanism"]]["value"] == "SCRAM-SHA-512"
    for key, secret_key in (("username", "username"), ("password", "password")):
        assert env[ENV[key]] == {"name": ENV[key], "valueFrom": {"secretKeyRef": {"name": "kafka-user",
                                                                                  "key": secret_key}}}
    assert env[ENV["ssl_cafile"]]["value"] == "/etc/hymirec/kafka-ca/ca.crt"
    mount = next(m for m in c["volumeMounts"] if m["name"] == "kafka-ca")
    assert mount == {"name": "kafka-ca", "mountPath": "/etc/hymirec/kafka-ca", "readOnly": True}
    volumes = out.get("Deployment", STREAM)["spec"]["template"]["spec"]["volumes"]
    assert next(v for v in volumes if v["name"] == "kafka-ca")["secret"]["secretName"] == "kafka-ca"


def test_kafka_security_defaults_and_errors(helm, render):
    from features.kafka_security import ENV
    c = container(render, STREAM, "stream")
    names = {e["name"] for e in c["env"]}
    assert env_of(c)[ENV["protocol"]] == "PLAINTEXT" and ENV["password"] not in names
    assert not any(m["name"] == "kafka-ca" for m in c["volumeMounts"])
    err = helm.template_error(set_values=["externalKafka.security.protocol=SASL_SSL"])
    assert "externalKafka.security.existingSecret must name the Secret" in err
    err = helm.template_error(set_values=["externalKafka.security.protocol=TLS"])
    assert "externalKafka.security.protocol must be PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL" in err


# ------------------------------------------------------------------------------------------ Triton control key

def test_triton_control_api_needs_the_key_only_triton_gets(render):
    """Triton's restricted-API flags take the key from the Secret via $(VAR) (never in the manifest) and are the
    flags serving.triton_access starts the real tritonserver with in tests/serving/test_triton_control_key.py."""
    from serving.triton_access import CONTROL_KEY_ENV, restricted_flags

    triton = container(render, TRITON, "triton")
    ref = next(e for e in triton["env"] if e["name"] == CONTROL_KEY_ENV)
    assert ref["valueFrom"] == {"secretKeyRef": {"name": "hymirec-triton-control", "key": "control-key"}}
    flags = [a for a in triton["args"] if "restricted" in a]
    assert flags == restricted_flags(f"$({CONTROL_KEY_ENV})")
    for deployment, name in ((SERVING, "serving"), (STREAM, "stream")):
        assert CONTROL_KEY_ENV not in env_of(container(render, deployment, name))  # inference needs no key


def test_triton_control_key_can_be_left_to_the_network_policy(helm):
    triton = container(helm.template(set_values=["triton.controlKey.existingSecret="]), TRITON, "triton")
    assert not [a for a in triton["args"] if "restricted" in a]
    assert "HYMIREC_TRITON_CONTROL_KEY" not in env_of(triton)
    err = helm.template_error(set_values=["triton.controlKey.key="])
    assert "triton.controlKey.key must name the key" in err


# ------------------------------------------------------------------------------------------ Redis TLS

def test_redis_tls_with_a_ca_from_a_secret(helm):
    """externalRedis.ssl + caSecret: both config files verify the server against the mounted CA, and
    StoreConfig reads that as verified TLS (the store tests run it against redis-server --tls-port)."""
    import yaml

    from features.store.config import StoreConfig
    from features.store.feast_redis import connection_string

    render = helm.template(set_values=["externalRedis.ssl=true", "externalRedis.caSecret=redis-ca"])
    data = render.get("ConfigMap", f"{NAME}-feast")["data"]
    store = yaml.safe_load(data["store.yaml"])
    assert store["redis_url"].startswith("redis-master:6379,ssl=true,ssl_cert_reqs=required,ssl_check_hostname=true,"
                                         "ssl_ca_certs=/etc/hymirec/redis-ca/ca.crt,")
    assert yaml.safe_load(data["feature_store.yaml"])["online_store"]["connection_string"] == store["redis_url"]
    cfg = StoreConfig.from_mapping(store)
    assert cfg.tls and connection_string(cfg) == store["redis_url"]  # nothing added a second time
    for deployment, name in ((SERVING, "serving"), (STREAM, "stream")):
        c = container(render, deployment, name)
        assert {"name": "redis-ca", "mountPath": "/etc/hymirec/redis-ca", "readOnly": True} in c["volumeMounts"]
        volumes = render.get("Deployment", deployment)["spec"]["template"]["spec"]["volumes"]
        assert {"name": "redis-ca", "secret": {"secretName": "redis-ca", "defaultMode": 0o444}} in volumes
    assert "a CA without TLS protects nothing" in helm.template_error(set_values=["externalRedis.caSecret=x"])
