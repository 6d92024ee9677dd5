"""The deployment artifacts (docker/, deploy/k8s/) checked against the code, without Docker or
a cluster: every CAIRN_* variable they set is a setting, every command parses as a `cairn`
command, every probe hits a real route, the Cairn containers run as a non-root user on a
read-only root filesystem, no secret value is committed (only placeholders), and the proxy in
front bounds slow clients no more loosely than Cairn does and is the only one Cairn believes
about client addresses."""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer
import yaml
from pydantic import BaseModel
from starlette.routing import BaseRoute, Match
from typer.core import TyperGroup

from app.audit.checkpoints import parse_private_key
from app.cli import app as cli_app
from app.kit.settings import MIN_SECRET_LENGTH, InsecureConfiguration, ServerSettings, Settings
from app.main import create_app
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
K8S = ROOT / "deploy" / "k8s"
APP_SERVICES = ("migrate", "api", "worker")
# Not a Settings field, but read by Settings itself (an extra TOML file).
EXTRA_CAIRN_VARIABLES = {"CAIRN_CONFIG"}
SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|SIGNING_KEY|API_KEY")
# `${NAME:?message}`: compose refuses to start without NAME; nothing is defaulted.
REQUIRED_INTERPOLATION = re.compile(r"\$\{[A-Z_][A-Z0-9_]*:\?[^}]*\}")
PLACEHOLDER = "CHANGE-ME"
# Something that looks like a real key or a long random token, wherever it appears.
KEY_MATERIAL = re.compile(r"-----BEGIN [A-Z ]*KEY-----|\b[A-Za-z0-9+/]{40,}={0,2}")


# --- the code the artifacts must agree with ---------------------------------------------------


def setting_exists(variable: str) -> bool:
    """Whether CAIRN_<NAME> (nested keys joined by `__`) names a field of Settings."""
    if variable in EXTRA_CAIRN_VARIABLES:
        return True
    if not variable.startswith("CAIRN_"):
        return False
    model: type[BaseModel] = Settings
    parts = variable.removeprefix("CAIRN_").lower().split("__")
    for depth, part in enumerate(parts, start=1):
        field = model.model_fields.get(part)
        if field is None:
            return False
        if depth == len(parts):
            return True
        nested = field.annotation
        if not (isinstance(nested, type) and issubclass(nested, BaseModel)):
            return False
        model = nested
    return False


def assert_cairn_command(argv: list[str]) -> None:
    """`argv` is a `cairn` command line that the CLI parses: each subcommand exists and every
    option is known (an unknown one raises typer's NoSuchOption here)."""
    assert argv[:1] == ["cairn"], argv
    command = typer.main.get_command(cli_app)
    args, name = list(argv[1:]), "cairn"
    while isinstance(command, TyperGroup):
        assert args, f"{argv}: no subcommand"
        name = args.pop(0)
        sub = command.get_command(typer.Context(command, info_name="cairn"), name)
        assert sub is not None, f"{argv}: no command {name!r}"
        command = sub
    command.make_context(name, args)


@pytest.fixture(scope="module")
def routes(tmp_path_factory: pytest.TempPathFactory) -> list[BaseRoute]:
    data = tmp_path_factory.mktemp("deploy-app")
    return create_app(make_settings(f"sqlite+aiosqlite:///{data / 'cairn.db'}", data)).routes


def assert_get_route(routes: list[BaseRoute], path: str) -> None:
    """The app answers `GET path` with a route of its own (not a 404)."""
    scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "headers": []}
    assert any(route.matches(scope)[0] == Match.FULL for route in routes), f"no GET {path}"


# --- docker/Dockerfile ---------------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """(INSTRUCTION, arguments) per build stage, continuation lines joined."""
    stages: list[list[tuple[str, str]]] = [[]]
    pending = ""
    for raw in (DOCKER / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        pending = ""
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append((keyword.upper(), rest.strip()))
    return stages[1:]


def dockerfile_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in stage:
        if keyword == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def test_the_image_runs_as_a_non_root_user() -> None:
    final = dockerfile_stages()[-1]
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users, "the final stage sets no USER: the container would run as root"
    user, _, group = users[-1].partition(":")
    assert user not in {"root", "0"}, users[-1]
    # Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
    assert user.isdigit(), users[-1]
    assert group not in {"root", "0"}, users[-1]


def test_the_image_checks_healthz_and_serves_without_migrating(routes: list[BaseRoute]) -> None:
    final = dockerfile_stages()[-1]
    checks = [rest for keyword, rest in final if keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    assert "/healthz" in checks[0]
    assert_get_route(routes, "/healthz")
    commands = [json.loads(rest) for keyword, rest in final if keyword == "CMD"]
    assert commands[-1] == ["cairn", "serve", "--no-migrate"]
    assert_cairn_command(commands[-1])


def test_the_image_bakes_the_models_and_writes_only_to_data_and_tmp() -> None:
    *builds, final = dockerfile_stages()
    env = dockerfile_env(final)
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["CAIRN_DATA_DIR"] == "/data"
    models = env["CAIRN_MODEL_CACHE_DIR"]
    # The same directory the build filled (docker/prepare_models.py) is copied into the image.
    build = builds[-1]
    assert dockerfile_env(build)["CAIRN_MODEL_CACHE_DIR"] == models
    assert any(k == "RUN" and "prepare_models.py" in rest for k, rest in build)
    assert ("COPY", f"--from=build {models} {models}") in final
    assert not models.startswith(env["CAIRN_DATA_DIR"]), "models must not need the data volume"
    # Library caches under ~ land on the tmpfs, not on the read-only image.
    assert env["HOME"] == "/tmp"
    assert "torch==2.13.0" in " ".join(rest for k, rest in build if k == "RUN")
    for name in env:
        if name.startswith("CAIRN_"):
            assert setting_exists(name), f"Dockerfile ENV {name} is not a setting"


def test_the_build_context_holds_what_the_dockerfile_copies() -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    for stage in dockerfile_stages():
        for keyword, rest in stage:
            if keyword != "COPY" or rest.startswith("--from"):
                continue
            *sources, _target = rest.split()
            for source in sources:
                assert source in allowed, f"COPY {source} is excluded from the build context"
                assert (ROOT / source).exists(), source


# --- docker/compose.yaml and Prometheus ----------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    return loaded


def service_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(key): str(value) for key, value in env.items()}


def test_compose_runs_the_real_commands(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["api"]["command"] == ["cairn", "serve", "--no-migrate"]
    assert services["migrate"]["command"] == ["cairn", "migrate"]
    assert services["worker"]["command"] == ["cairn", "worker"]
    for name in APP_SERVICES:
        assert_cairn_command(services[name]["command"])
    assert services["api"]["deploy"]["replicas"] == 2
    assert services["worker"]["environment"]["CAIRN_BROKER_URL"]
    # Migrations run once, before any API replica or worker starts.
    for name in ("api", "worker"):
        migrate = services[name]["depends_on"]["migrate"]
        assert migrate["condition"] == "service_completed_successfully"
    assert services["migrate"]["restart"] == "no"


def test_compose_app_containers_have_a_read_only_root_and_the_shared_volume(
    compose: dict[str, Any],
) -> None:
    for name in APP_SERVICES:
        service = compose["services"][name]
        assert service["read_only"] is True, name
        assert any(mount.split(":")[0] == "/tmp" for mount in service["tmpfs"]), name
        assert service.get("user") in (None, "10001", "10001:10001"), name
        data_dir = service_env(service)["CAIRN_DATA_DIR"]
        volumes = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
        assert volumes[data_dir] in compose["volumes"], f"{name}: {data_dir} is not a volume"
    sources = {tuple(compose["services"][name]["volumes"]) for name in ("api", "worker", "migrate")}
    assert len(sources) == 1, "API replicas and workers must share one data volume"


def test_compose_checks_readiness_on_readyz(
    compose: dict[str, Any], routes: list[BaseRoute]
) -> None:
    services = compose["services"]
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    assert_get_route(routes, "/readyz")
    # The image's /healthz check would fail where nothing serves HTTP.
    for name in ("worker", "migrate"):
        assert services[name]["healthcheck"] == {"disable": True}, name


def test_compose_sets_only_real_settings(compose: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        for variable in service_env(compose["services"][name]):
            if variable.startswith("CAIRN_"):
                assert setting_exists(variable), f"compose {name}: {variable} is not a setting"


def test_compose_commits_no_secret(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for variable, value in service_env(service).items():
            if SECRET_NAME.search(variable):
                assert REQUIRED_INTERPOLATION.fullmatch(value), (
                    f"compose {name}: {variable} must come from the environment (${{X:?...}})"
                )
            if "://" in value:
                password = urlsplit(value).password
                assert password is None or REQUIRED_INTERPOLATION.fullmatch(password), (
                    f"compose {name}: {variable} carries a literal password"
                )
    assert not KEY_MATERIAL.search((DOCKER / "compose.yaml").read_text())
    for key in ("CAIRN_JWT_SECRET", "CAIRN_AUDIT_SECRET", "CAIRN_AUDIT_SIGNING_KEY"):
        assert key in service_env(compose["services"]["api"]), key


def test_prometheus_scrapes_every_api_replica_with_the_metrics_token(
    compose: dict[str, Any], routes: list[BaseRoute]
) -> None:
    prometheus = compose["services"]["prometheus"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in prometheus["volumes"]}
    config_dir = next(target for target, source in mounts.items() if source == "./prometheus")
    assert (DOCKER / "prometheus" / "prometheus.yml").is_file()
    config = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())

    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "cairn-api"]
    assert_get_route(routes, job["metrics_path"])
    (discovery,) = job["dns_sd_configs"]
    assert discovery["names"] == ["api"]
    assert discovery["port"] == 8000
    # The token reaches Prometheus as a compose secret made from CAIRN_METRICS_TOKEN.
    secret = Path(job["authorization"]["credentials_file"])
    assert secret.parent == Path("/run/secrets")
    assert secret.name in prometheus["secrets"]
    assert compose["secrets"][secret.name] == {"environment": "CAIRN_METRICS_TOKEN"}
    assert service_env(compose["services"]["api"])["CAIRN_METRICS_TOKEN"]

    rules = [Path(rule) for rule in config["rule_files"]]
    assert Path(config_dir) / "alerts.yml" in rules
    for rule in rules:
        assert rule.parent == Path(config_dir), f"{rule} is outside the mounted folder"
        local = DOCKER / "prometheus" / rule.name
        if local.is_file():  # maintained with the observability code
            assert "groups" in yaml.safe_load(local.read_text())


def test_compose_encrypts_at_rest_with_a_kek_it_refuses_to_go_without(
    compose: dict[str, Any],
) -> None:
    for name in ("migrate", "api", "worker"):
        service = compose["services"][name]
        env = service_env(service)
        assert env["CAIRN_ENCRYPTION__ENABLED"] == "true", name
        kek = Path(env["CAIRN_ENCRYPTION__KEK_FILE"])
        assert kek.parent == Path("/run/secrets"), name
        assert kek.name in service["secrets"], name
    source = compose["secrets"]["kek"]["file"]
    # No default path: compose refuses to start until the operator names the KEK file.
    assert REQUIRED_INTERPOLATION.fullmatch(source), source


# --- docker/nginx: the proxy in front of the API replicas ----------------------------------------

NGINX = DOCKER / "nginx" / "cairn.conf"
# h11's default limit on a request line and headers, which Cairn keeps.
CAIRN_MAX_HEADER_BYTES = 16 * 1024
_NGINX_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600}
_NGINX_SIZES = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def nginx_directives() -> list[tuple[str, list[str]]]:
    """(name, arguments) of every directive in docker/nginx/cairn.conf, blocks flattened."""
    text = re.sub(r"#[^\n]*", "", NGINX.read_text())
    found = []
    for statement in re.split(r"[;{}]", text):
        words = shlex.split(statement)
        if words:
            found.append((words[0], words[1:]))
    return found


def nginx_one(name: str) -> list[str]:
    """The arguments of the one `name` directive."""
    matches = [args for directive, args in nginx_directives() if directive == name]
    assert len(matches) == 1, f"{NGINX.name}: {len(matches)} {name} directives"
    return matches[0]


def nginx_seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)([smh]?)", value)
    assert match, f"{value!r} is not an nginx time"
    return int(match[1]) * _NGINX_UNITS[match[2]]


def nginx_bytes(value: str) -> int:
    match = re.fullmatch(r"(\d+)([kmg]?)", value.lower())
    assert match, f"{value!r} is not an nginx size"
    return int(match[1]) * _NGINX_SIZES[match[2]]


def test_the_proxy_bounds_slow_clients_no_more_loosely_than_cairn() -> None:
    settings = Settings()
    server = settings.server
    assert nginx_seconds(nginx_one("client_header_timeout")[0]) <= server.header_timeout_seconds
    assert nginx_seconds(nginx_one("client_body_timeout")[0]) <= server.body_timeout_seconds
    assert nginx_seconds(nginx_one("keepalive_timeout")[0]) <= 60
    assert nginx_seconds(nginx_one("send_timeout")[0]) <= 300
    count, size = nginx_one("large_client_header_buffers")
    assert int(count) * nginx_bytes(size) <= 4 * CAIRN_MAX_HEADER_BYTES
    assert nginx_bytes(size) <= CAIRN_MAX_HEADER_BYTES
    # Every upload Cairn accepts passes the proxy (Cairn refuses larger ones itself).
    assert nginx_bytes(nginx_one("client_max_body_size")[0]) >= settings.max_upload_bytes
    # Connections per client address, in a zone keyed by that address; 503 past the limit.
    zone_key, zone = nginx_one("limit_conn_zone")
    assert zone_key == "$binary_remote_addr"
    name, limit = nginx_one("limit_conn")
    assert zone == f"zone={name}:10m"
    assert 0 < int(limit) <= server.max_connections
    assert nginx_one("limit_conn_status") == ["503"]
    # Slow uploads are absorbed by nginx; streamed answers are not held back.
    assert nginx_one("proxy_request_buffering") == ["on"]
    assert nginx_one("proxy_buffering") == ["off"]


def test_the_proxy_replaces_the_forwarding_headers_cairn_reads() -> None:
    headers = {
        args[0].lower(): args[1] for name, args in nginx_directives() if name == "proxy_set_header"
    }
    # Replaced with the address nginx saw, never appended to what the client wrote.
    assert headers["x-forwarded-for"] == "$remote_addr"
    assert headers["x-forwarded-proto"] == "$scheme"
    # Headers Cairn never reads are not passed on either.
    assert headers["x-real-ip"] == ""
    assert headers["forwarded"] == ""


def test_compose_puts_the_proxy_in_front_and_cairn_believes_only_it(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    proxy, api = services["proxy"], services["api"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in proxy["volumes"]}
    assert mounts["/etc/nginx/conf.d/default.conf"] == "./nginx/cairn.conf"
    assert (DOCKER / mounts["/etc/nginx/conf.d/default.conf"]).resolve() == NGINX
    # The certificate and key come from a folder git ignores.
    assert mounts["/etc/nginx/tls"] == "./tls"
    for directive in ("ssl_certificate", "ssl_certificate_key"):
        assert Path(nginx_one(directive)[0]).parent == Path("/etc/nginx/tls")
    ignored = (DOCKER / "tls" / ".gitignore").read_text().split()
    assert "*" in ignored
    assert "!.gitignore" in ignored
    # The proxy's published port is the one it listens on; the API replicas publish none.
    listen = nginx_one("listen")
    assert listen[1:] == ["ssl"]
    assert [port.split(":")[-1] for port in proxy["ports"]] == [listen[0]]
    assert "ports" not in api, "clients must come through the proxy"
    # nginx sends to the API replicas' port.
    target = next(args[1] for name, args in nginx_directives() if name == "set")
    assert urlsplit(target).hostname == "api"
    assert urlsplit(target).port == Settings().port

    # Its fixed address, outside the range replicas are given, is the one trusted proxy.
    address = ipaddress.ip_address(proxy["networks"]["edge"]["ipv4_address"])
    (edge,) = compose["networks"]["edge"]["ipam"]["config"]
    assert address in ipaddress.ip_network(edge["subnet"])
    assert address not in ipaddress.ip_network(edge["ip_range"])
    assert "edge" in api["networks"]
    trusted = json.loads(service_env(api)["CAIRN_SERVER__TRUSTED_PROXIES"])
    assert trusted == [str(address)]
    assert ServerSettings(trusted_proxies=trusted).trusted_proxies == trusted


# --- deploy/k8s ----------------------------------------------------------------------------------


def k8s_documents() -> Iterator[tuple[str, dict[str, Any]]]:
    """(file name, object) for every Kubernetes object (kustomization.yaml is none)."""
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                yield path.name, document


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict[str, Any]]:
    """Every Kubernetes object, by `Kind/name`."""
    found: dict[str, dict[str, Any]] = {}
    for _file, document in k8s_documents():
        assert document["apiVersion"], document
        assert document["metadata"]["name"], document
        found[f"{document['kind']}/{document['metadata']['name']}"] = document
    return found


def pod_specs(manifests: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        key: doc["spec"]["template"]["spec"]
        for key, doc in manifests.items()
        if doc["kind"] in {"Deployment", "Job", "StatefulSet", "DaemonSet"}
    }


def test_kustomization_applies_every_manifest_but_the_secret_template(
    manifests: dict[str, dict[str, Any]],
) -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files - {"secret.example.yaml"}
    for name, document in k8s_documents():
        if name in kustomization["resources"]:
            assert document["kind"] != "Secret", f"{name}: kustomize would overwrite the Secret"
    (image,) = kustomization["images"]
    for spec in pod_specs(manifests).values():
        for container in spec["containers"]:
            assert container["image"] == image["name"]


def test_every_cairn_pod_is_non_root_with_a_read_only_root(
    manifests: dict[str, dict[str, Any]],
) -> None:
    specs = pod_specs(manifests)
    assert {"Deployment/cairn-api", "Deployment/cairn-worker", "Job/cairn-migrate"} <= set(specs)
    for key, spec in specs.items():
        pod = spec.get("securityContext", {})
        volumes = {volume["name"]: volume for volume in spec["volumes"]}
        for container in spec["containers"]:
            context = {**pod, **container.get("securityContext", {})}
            assert context["runAsNonRoot"] is True, key
            assert context.get("runAsUser", 10001) != 0, key
            assert context["readOnlyRootFilesystem"] is True, key
            assert context["allowPrivilegeEscalation"] is False, key
            assert context["capabilities"]["drop"] == ["ALL"], key
            mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], f"{key}: /tmp must be an emptyDir"
            resources = container["resources"]
            for bound in ("requests", "limits"):
                assert set(resources[bound]) == {"cpu", "memory"}, f"{key}: {bound}"
            assert_cairn_command(container.get("command", []) + container.get("args", []))


def test_workloads_read_the_config_and_secret_and_share_the_rwx_volume(
    manifests: dict[str, dict[str, Any]],
) -> None:
    config = manifests["ConfigMap/cairn-config"]["data"]
    assert "Secret/cairn-secrets" in manifests  # the template names what the pods read
    (claim,) = [doc for key, doc in manifests.items() if key.startswith("PersistentVolumeClaim/")]
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    for key, spec in pod_specs(manifests).items():
        for container in spec["containers"]:
            sources = container["envFrom"]
            assert {"configMapRef": {"name": "cairn-config"}} in sources, key
            assert {"secretRef": {"name": "cairn-secrets"}} in sources, key
            mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
            assert config["CAIRN_DATA_DIR"] in mounts, f"{key}: nothing at CAIRN_DATA_DIR"
    for key in ("Deployment/cairn-api", "Deployment/cairn-worker"):
        volumes = pod_specs(manifests)[key]["volumes"]
        claims = [
            v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v
        ]
        assert claims == [claim["metadata"]["name"]], key


def test_the_api_deployment_probes_real_routes(
    manifests: dict[str, dict[str, Any]], routes: list[BaseRoute]
) -> None:
    api = manifests["Deployment/cairn-api"]
    assert api["spec"]["replicas"] == 2
    (container,) = api["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["cairn", "serve", "--no-migrate"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        check = container[probe]["httpGet"]
        assert_get_route(routes, check["path"])
        assert check["port"] in ports, probe


def test_service_hpa_and_pdb_select_the_api_pods(manifests: dict[str, dict[str, Any]]) -> None:
    api = manifests["Deployment/cairn-api"]
    labels = api["spec"]["template"]["metadata"]["labels"]
    assert api["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (container,) = api["spec"]["template"]["spec"]["containers"]
    port_names = {port["name"] for port in container["ports"]}

    service = manifests["Service/cairn-api"]["spec"]
    assert service["selector"].items() <= labels.items()
    assert all(port["targetPort"] in port_names for port in service["ports"])

    pdb = manifests["PodDisruptionBudget/cairn-api"]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["minAvailable"] >= 1

    hpa = manifests["HorizontalPodAutoscaler/cairn-api"]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "cairn-api",
    }
    assert hpa["minReplicas"] >= 2
    assert hpa["maxReplicas"] > hpa["minReplicas"]
    assert [metric["resource"]["name"] for metric in hpa["metrics"]] == ["cpu"]


def test_k8s_sets_only_real_settings(
    manifests: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = manifests["ConfigMap/cairn-config"]["data"]
    secret = manifests["Secret/cairn-secrets"]["stringData"]
    named = set(config) | set(secret)
    for spec in pod_specs(manifests).values():
        for container in spec["containers"]:
            named |= {item["name"] for item in container.get("env", [])}
    for variable in named:
        if variable.startswith("CAIRN_"):
            assert setting_exists(variable), f"deploy/k8s: {variable} is not a setting"

    # The ConfigMap's values are valid too: Settings loads them (with stand-in secrets, and a
    # stand-in KEK file where the init container would put the real one).
    for variable, value in config.items():
        monkeypatch.setenv(variable, value)
    kek = tmp_path / "kek"
    kek.write_text(base64.b64encode(b"k" * 32).decode())
    kek.chmod(0o600)
    monkeypatch.setenv("CAIRN_ENCRYPTION__KEK_FILE", str(kek))
    monkeypatch.setenv("CAIRN_JWT_SECRET", "j" * MIN_SECRET_LENGTH)
    monkeypatch.setenv("CAIRN_AUDIT_SECRET", "a" * MIN_SECRET_LENGTH)
    monkeypatch.setenv("CAIRN_AUDIT_SIGNING_KEY", "stand-in")
    settings = Settings()
    assert settings.environment == "production"
    assert settings.encryption.enabled
    assert str(settings.data_dir) == config["CAIRN_DATA_DIR"]
    # Named, so an operator sees where the ingress goes; no proxy is believed until they do.
    assert json.loads(config["CAIRN_SERVER__TRUSTED_PROXIES"]) == []
    assert settings.server.trusted_proxies == []


def test_k8s_commits_no_secret(manifests: dict[str, dict[str, Any]]) -> None:
    for path in [*K8S.glob("*.yaml"), DOCKER / "Dockerfile"]:
        assert not KEY_MATERIAL.search(path.read_text()), path.name

    secret = manifests["Secret/cairn-secrets"]
    assert "data" not in secret, "base64 `data` would hide real values: use stringData"
    for variable, value in secret["stringData"].items():
        if "://" in value:
            assert urlsplit(value).password == PLACEHOLDER, variable
        else:
            assert value == PLACEHOLDER, variable
    # A placeholder left in place is refused, never used as a key.
    assert len(PLACEHOLDER) < MIN_SECRET_LENGTH
    with pytest.raises(InsecureConfiguration):
        Settings(
            environment="production",
            jwt_secret=PLACEHOLDER,
            audit_secret=PLACEHOLDER,
            audit_signing_key=PLACEHOLDER,
        )
    with pytest.raises(InsecureConfiguration):
        parse_private_key(PLACEHOLDER, "CAIRN_AUDIT_SIGNING_KEY")

    # Everything that carries a credential lives in the Secret, not in the ConfigMap.
    for variable, value in manifests["ConfigMap/cairn-config"]["data"].items():
        assert not SECRET_NAME.search(variable), variable
        assert "://" not in value, f"{variable}: URLs (with credentials) belong in the Secret"


def test_every_k8s_pod_gets_the_kek_as_a_private_file_in_memory(
    manifests: dict[str, dict[str, Any]],
) -> None:
    config = manifests["ConfigMap/cairn-config"]["data"]
    assert config["CAIRN_ENCRYPTION__ENABLED"] == "true"
    kek = Path(config["CAIRN_ENCRYPTION__KEK_FILE"])
    specs = pod_specs(manifests)
    assert {"Deployment/cairn-api", "Deployment/cairn-worker", "Job/cairn-migrate"} <= set(specs)
    for key, spec in specs.items():
        volumes = {volume["name"]: volume for volume in spec["volumes"]}
        (init,) = [c for c in spec["initContainers"] if c["name"] == "kek"]
        context = {**spec.get("securityContext", {}), **init["securityContext"]}
        assert context["runAsNonRoot"] is True, key
        assert context["readOnlyRootFilesystem"] is True, key
        assert context["capabilities"]["drop"] == ["ALL"], key
        # install -m 0600 SOURCE TARGET: the target is where the setting points, mode 0600.
        command = init["command"]
        assert command[:3] == ["install", "-m", "0600"], key
        source, target = Path(command[3]), Path(command[4])
        assert target == kek, key
        init_mounts = {m["mountPath"]: m["name"] for m in init["volumeMounts"]}
        secret = volumes[init_mounts[str(source.parent)]]["secret"]
        assert secret["secretName"] == "cairn-kek", key
        assert secret["defaultMode"] == 0o400, key
        memory = volumes[init_mounts[str(target.parent)]]
        assert memory["emptyDir"]["medium"] == "Memory", f"{key}: the KEK must not reach a disk"
        for container in spec["containers"]:
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            mount = mounts[str(kek.parent)]
            assert mount["name"] == init_mounts[str(target.parent)], key
            assert mount["readOnly"] is True, key
            # The Secret itself is mounted into the init container only.
            assert init_mounts[str(source.parent)] not in {m["name"] for m in mounts.values()}
