"""Static checks of the container files in docker/ (no Docker engine, no cluster needed).

Every ``hpo-trainer`` command that the Dockerfile, the compose file, the Kubernetes
manifests and docker/WORKFLOW.md run is checked against the real argument parser.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hpo_trainer import cli

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
COMPOSE = DOCKER / "compose.yaml"
K8S = DOCKER / "k8s"
WORKFLOW = DOCKER / "WORKFLOW.md"

SUBCOMMANDS = ("search", "status", "export", "train", "dashboard", "report", "migrate")
SHELL_OPERATORS = {"&&", "||", ";", "|", "&", "(", ")", ";;"}
# A password inside a URL: scheme://user:password@host
URL_PASSWORD = re.compile(r"://[^/\s:@]+:([^@\s/]+)@")
DOCKERFILE_INSTRUCTIONS = {
    "FROM", "ARG", "ENV", "RUN", "COPY", "ADD", "WORKDIR", "USER", "ENTRYPOINT", "CMD",
    "LABEL", "EXPOSE", "VOLUME", "HEALTHCHECK", "SHELL", "STOPSIGNAL", "ONBUILD",
}  # fmt: skip


# --- helpers -----------------------------------------------------------------------------


def yaml_files() -> list[Path]:
    return sorted(p for p in DOCKER.rglob("*") if p.suffix in (".yaml", ".yml"))


def load_docs(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def compose() -> dict[str, Any]:
    return load_docs(COMPOSE)[0]


def k8s_docs() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p in sorted(K8S.glob("*.yaml")) for d in load_docs(p)]


def k8s_jobs() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p, d in k8s_docs() if d.get("kind") == "Job"]


def pod_containers(job: dict[str, Any]) -> list[dict[str, Any]]:
    spec = job["spec"]["template"]["spec"]
    return list(spec.get("initContainers", [])) + list(spec["containers"])


COMPOSE_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)((?::?[-?+])([^}]*))?\}")


def interpolate(text: str) -> str:
    """Resolve compose's ``${VAR:-default}`` to the default (every variable has one)."""

    def sub(m: re.Match[str]) -> str:
        name, op = m.group(1), m.group(2)
        assert op and op.lstrip(":").startswith("-"), f"${{{name}}} in compose has no default"
        return m.group(3)

    return COMPOSE_VAR.sub(sub, text.replace("$$", "\0")).replace("\0", "$")


def compose_vars(node: Any) -> Iterator[str]:
    """Yield the variable names used as ``${...}`` anywhere in a YAML tree."""
    if isinstance(node, dict):
        for value in node.values():
            yield from compose_vars(value)
    elif isinstance(node, list):
        for value in node:
            yield from compose_vars(value)
    elif isinstance(node, str):
        yield from (m.group(1) for m in COMPOSE_VAR.finditer(node))


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)
    elif node is not None:
        yield str(node)


def is_pinned(image: str) -> bool:
    """Return whether an image reference names an exact version (or a digest)."""
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:  # no tag at all (the colon belonged to a registry port)
        return False
    return tag != "latest" and re.match(r"^v?\d+\.\d+", tag) is not None


def shell_invocations(script: str) -> list[list[str]]:
    """Return the argv (after ``hpo-trainer``) of every hpo-trainer call in a sh script."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens = list(lexer)
    calls = []
    for i, token in enumerate(tokens):
        if token == "hpo-trainer":
            argv = []
            for t in tokens[i + 1 :]:
                if t in SHELL_OPERATORS:
                    break
                argv.append(t)
            calls.append(argv)
    return calls


def argv_of(entrypoint: list[str] | None, command: list[str] | None) -> list[list[str]]:
    """Return the hpo-trainer argvs a container runs, given the image's ENTRYPOINT
    ``["hpo-trainer"]`` and a compose / Kubernetes entrypoint (command) and command (args).
    """
    command = list(command or [])
    if not entrypoint:
        return [command]
    if entrypoint[:2] in (["sh", "-c"], ["/bin/sh", "-c"], ["bash", "-c"]):
        assert len(entrypoint) == 3 and not command, f"sh -c takes one script: {entrypoint}"
        calls = shell_invocations(entrypoint[2])
        assert calls, f"this script runs no hpo-trainer command: {entrypoint[2]!r}"
        return calls
    assert entrypoint[0] == "hpo-trainer", f"unexpected entrypoint {entrypoint}"
    return [list(entrypoint[1:]) + command]


def as_list(value: Any) -> list[str] | None:
    if value is None:
        return None
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def parse_cli(argv: list[str]) -> Any:
    """Parse argv with the real CLI parser; fail the test with argparse's message."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            return cli._parser().parse_args(argv)
    except SystemExit as exc:
        if exc.code == 0 and {"--help", "-h", "--version"} & set(argv):
            return None
        pytest.fail(f"hpo-trainer {shlex.join(argv)} is rejected by the CLI: {err.getvalue()}")


def check_command(argv: list[str], where: str) -> Any:
    args = parse_cli(argv)
    if args is not None and getattr(args, "study_file", None):
        assert (ROOT / args.study_file).is_file(), f"{where}: {args.study_file} does not exist"
    return args


# --- Dockerfile ----------------------------------------------------------------------------


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """Return the (INSTRUCTION, arguments) pairs of a Dockerfile, continuations joined."""
    instructions: list[tuple[str, str]] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):  # comments inside a continued instruction
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, rest = current.strip().partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        current = ""
    assert not current.strip(), "the Dockerfile ends inside a continued line"
    return instructions


def dockerfile() -> list[tuple[str, str]]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def arg_defaults(instructions: list[tuple[str, str]]) -> dict[str, str]:
    defaults = {}
    for keyword, rest in instructions:
        if keyword == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            defaults[name.strip()] = value.strip().strip("\"'")
    return defaults


def expand(text: str, variables: dict[str, str]) -> str:
    return re.sub(
        r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: variables.get(m.group(1), ""), text
    )


def exec_form(rest: str) -> list[str]:
    value = json.loads(rest)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), rest
    return value


def test_dockerfile_parses_into_known_instructions() -> None:
    instructions = dockerfile()
    keywords = [k for k, _ in instructions]
    assert set(keywords) <= DOCKERFILE_INSTRUCTIONS, set(keywords) - DOCKERFILE_INSTRUCTIONS
    first = next(k for k in keywords if k != "ARG")
    assert first == "FROM", "only ARG may come before the first FROM"
    for keyword in ("FROM", "WORKDIR", "USER", "ENTRYPOINT", "CMD"):
        assert keyword in keywords, f"the Dockerfile has no {keyword}"


def test_dockerfile_base_images_are_pinned() -> None:
    instructions = dockerfile()
    defaults = arg_defaults(instructions)
    froms = [rest.split()[0] for k, rest in instructions if k == "FROM"]
    assert froms
    for image in froms:
        resolved = expand(image, defaults)
        assert is_pinned(resolved), f"FROM {image} ({resolved}) is not pinned to a version"
    image_args = {k: v for k, v in defaults.items() if "IMAGE" in k}
    assert image_args, "expected a build argument that chooses the base image"
    for name, value in image_args.items():
        assert is_pinned(value), f"ARG {name}={value} is not pinned to a version"
    # The CUDA image named in comments and docs, for --build-arg BASE_IMAGE=, too.
    text = DOCKERFILE.read_text() + WORKFLOW.read_text()
    cuda = re.findall(r"nvidia/cuda:[\w.-]+", text)
    assert cuda, "the Dockerfile should say which CUDA base image to use"
    for image in cuda:
        assert is_pinned(image) and "cudnn-runtime" in image, image


def test_dockerfile_torch_pins_match_pyproject() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    defaults = arg_defaults(dockerfile())
    for package, arg in (("torch", "TORCH_VERSION"), ("torchvision", "TORCHVISION_VERSION")):
        pin = re.search(rf'"{package}==([^"]+)"', pyproject)
        assert pin, f"pyproject.toml no longer pins {package}"
        assert defaults.get(arg) == pin.group(1), f"ARG {arg} differs from pyproject.toml"


def test_dockerfile_installs_project_and_runs_hpo_trainer_as_non_root() -> None:
    instructions = dockerfile()
    runs = " ".join(rest for k, rest in instructions if k == "RUN")
    assert re.search(r"pip install .*\[postgres\]", runs), "install the project with [postgres]"
    users = [rest for k, rest in instructions if k == "USER"]
    assert users[-1].split(":")[0] not in ("root", "0"), "the image must not run as root"
    entrypoint = exec_form([r for k, r in instructions if k == "ENTRYPOINT"][-1])
    assert entrypoint == ["hpo-trainer"]
    cmd = exec_form([r for k, r in instructions if k == "CMD"][-1])
    check_command(cmd, "Dockerfile CMD")
    # COPY sources exist, and studies/ lands in WORKDIR so that relative paths work.
    workdir = [rest for k, rest in instructions if k == "WORKDIR"][-1]
    copies = [rest.split() for k, rest in instructions if k == "COPY"]
    for parts in copies:
        for source in (p for p in parts[:-1] if not p.startswith("--")):
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    study_copy = [p for p in copies if p[-2].rstrip("/") == "studies"]
    assert study_copy, "copy studies/ into the image"
    target = study_copy[0][-1]
    assert target.rstrip("/") in ("studies", f"{workdir.rstrip('/')}/studies"), target


# --- YAML: shapes --------------------------------------------------------------------------


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DOCKER)))
def test_yaml_parses(path: Path) -> None:
    docs = load_docs(path)
    assert docs and all(isinstance(d, dict) for d in docs), f"{path}: not YAML mappings"


def test_yaml_files_exist() -> None:
    names = {str(p.relative_to(DOCKER)) for p in yaml_files()}
    assert {"compose.yaml", "k8s/job.yaml", "k8s/secret.yaml"} <= names


def test_compose_shape() -> None:
    doc = compose()
    assert {"postgres", "worker", "dashboard", "train"} <= set(doc["services"])
    for name, service in doc["services"].items():
        assert "image" in service or "build" in service, name
        build = service.get("build")
        if build is not None:
            context = (COMPOSE.parent / build["context"]).resolve()
            assert context == ROOT, f"{name}: build context should be the repository root"
            assert (context / build["dockerfile"]).is_file(), build["dockerfile"]


def test_k8s_shape() -> None:
    kinds = [d.get("kind") for _, d in k8s_docs()]
    assert "Secret" in kinds and "Job" in kinds
    for path, doc in k8s_docs():
        assert doc.get("apiVersion") and doc.get("metadata", {}).get("name"), path
    job = next(d for p, d in k8s_jobs() if p.name == "job.yaml")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert isinstance(spec["completions"], int) and spec["completions"] >= 1
    assert spec["parallelism"] == spec["completions"]
    assert isinstance(spec["backoffLimit"], int)
    for path, job in k8s_jobs():
        pod = job["spec"]["template"]["spec"]
        assert pod["restartPolicy"] in ("OnFailure", "Never"), path
        assert pod.get("securityContext", {}).get("runAsNonRoot") is True, path
        for container in pod_containers(job):
            resources = container.get("resources", {})
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(part, {})), (
                    f"{path}: {container['name']} needs resources.{part} cpu and memory"
                )


def test_k8s_runs_volume_is_explained() -> None:
    text = (K8S / "job.yaml").read_text(encoding="utf-8")
    job = load_docs(K8S / "job.yaml")[0]
    pod = job["spec"]["template"]["spec"]
    runs_dir = next(
        e["value"]
        for c in pod["containers"]
        for e in c.get("env", [])
        if e["name"] == cli.ENV_RUNS_DIR
    )
    mounts = {m["mountPath"]: m["name"] for c in pod["containers"] for m in c["volumeMounts"]}
    assert runs_dir in mounts, f"mount a volume at {runs_dir}"
    volume = next(v for v in pod["volumes"] if v["name"] == mounts[runs_dir])
    kind = "emptyDir" if "emptyDir" in volume else "persistentVolumeClaim"
    assert kind in volume
    comments = " ".join(line for line in text.splitlines() if line.strip().startswith("#"))
    assert kind in comments, f"say in a comment why the runs volume is an {kind}"


# --- images --------------------------------------------------------------------------------


def test_compose_and_k8s_images_are_pinned() -> None:
    images = [interpolate(s["image"]) for s in compose()["services"].values() if "image" in s]
    images += [c["image"] for _, job in k8s_jobs() for c in pod_containers(job)]
    assert images
    for image in images:
        assert is_pinned(image), f"image {image} is not pinned to a version"


# --- commands against the real CLI ---------------------------------------------------------


def compose_commands() -> list[tuple[str, list[str]]]:
    calls = []
    for name, service in compose()["services"].items():
        if "build" not in service:
            continue  # not the hpo-trainer image
        entrypoint = as_list(service.get("entrypoint"))
        command = as_list(service.get("command"))
        entrypoint = [interpolate(a) for a in entrypoint] if entrypoint else None
        command = [interpolate(a) for a in command] if command else None
        calls += [(f"compose {name}", argv) for argv in argv_of(entrypoint, command)]
    return calls


def k8s_commands() -> list[tuple[str, list[str]]]:
    calls = []
    for path, job in k8s_jobs():
        for c in pod_containers(job):
            argvs = argv_of(as_list(c.get("command")), as_list(c.get("args")))
            calls += [(f"{path.name} {c['name']}", argv) for argv in argvs]
    return calls


def workflow_commands() -> list[tuple[str, list[str]]]:
    """Return the hpo-trainer calls in WORKFLOW.md's shell blocks, direct or in an image."""
    text = WORKFLOW.read_text(encoding="utf-8")
    calls = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for line in re.sub(r"\\\n", " ", block).splitlines():
            calls += line_commands(line)
    return calls


def line_commands(line: str) -> list[tuple[str, list[str]]]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens = list(lexer)
    calls = []
    for i, token in enumerate(tokens):
        rest = tokens[i + 1 :]
        stop = next((j for j, t in enumerate(rest) if t in SHELL_OPERATORS), len(rest))
        if token == "hpo-trainer" or (
            token.startswith("hpo-trainer:") and rest and rest[0] in SUBCOMMANDS
        ):
            calls.append(("WORKFLOW.md", rest[:stop]))
        elif "hpo-trainer " in token:  # an sh -c script passed to a container
            calls += [("WORKFLOW.md", argv) for argv in shell_invocations(token)]
    return calls


def all_commands() -> list[tuple[str, list[str]]]:
    return compose_commands() + k8s_commands() + workflow_commands()


@pytest.mark.parametrize(
    ("where", "argv"), all_commands(), ids=lambda v: v if isinstance(v, str) else " ".join(v)
)
def test_commands_exist_in_the_cli(where: str, argv: list[str]) -> None:
    check_command(argv, where)


def test_expected_commands_are_run() -> None:
    commands = {(where.split()[1], argv[0]) for where, argv in compose_commands()}
    assert {("worker", "search"), ("dashboard", "dashboard"), ("train", "export")} <= commands
    assert ("train", "train") in commands
    for where, argv in compose_commands() + k8s_commands():
        if argv and argv[0] == "search":
            args = parse_cli(argv)
            assert args.workers == 1, f"{where}: one worker process per container"
    assert any(argv[:1] == ["search"] for _, argv in k8s_commands())


def test_export_then_train_use_the_same_params_file() -> None:
    for where, argvs in grouped_scripts():
        parsed = {a[0]: parse_cli(a) for a in argvs if a}
        if "export" in parsed and "train" in parsed:
            assert parsed["train"].params == parsed["export"].out, where
            assert list(parsed) == ["export", "train"], f"{where}: export first, then train"


def grouped_scripts() -> list[tuple[str, list[list[str]]]]:
    groups = []
    for name, service in compose()["services"].items():
        entrypoint = as_list(service.get("entrypoint")) or []
        if entrypoint[:2] == ["sh", "-c"]:
            groups.append((f"compose {name}", shell_invocations(entrypoint[2])))
    for path, job in k8s_jobs():
        for c in pod_containers(job):
            command = as_list(c.get("command")) or []
            if command[:2] == ["sh", "-c"]:
                groups.append((f"{path.name} {c['name']}", shell_invocations(command[2])))
    assert groups
    return groups


# --- environment variables -----------------------------------------------------------------


def used_env_vars() -> set[str]:
    doc = compose()
    names = set(compose_vars(doc))
    for service in doc["services"].values():
        env = service.get("environment") or {}
        names |= set(env) if isinstance(env, dict) else {e.split("=")[0] for e in env}
    for _, job in k8s_jobs():
        names |= {e["name"] for c in pod_containers(job) for e in c.get("env", [])}
    instructions = dockerfile()
    names |= set(arg_defaults(instructions))
    for keyword, rest in instructions:
        if keyword == "ENV":
            names |= {n for n in re.findall(r"([A-Z_][A-Z0-9_]*)=", rest) if n.startswith("HPO")}
    return names


def test_environment_variables_are_documented() -> None:
    docs = WORKFLOW.read_text(encoding="utf-8") + (ROOT / "README.md").read_text("utf-8")
    names = used_env_vars()
    assert {cli.ENV_STORAGE, cli.ENV_RUNS_DIR} <= names
    missing = sorted(n for n in names if f"`{n}`" not in docs)
    assert not missing, f"document these in docker/WORKFLOW.md: {missing}"


def test_compose_variables_have_defaults() -> None:
    for name in compose_vars(compose()):
        assert name  # interpolate() asserts that each one has a default
    interpolate(COMPOSE.read_text(encoding="utf-8"))


# --- compose: scaling, health, exposure, secrets --------------------------------------------


def published_ports(service: dict[str, Any]) -> list[tuple[str | None, str]]:
    """Return (host_ip, published port) for each port a service publishes."""
    ports = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports.append((entry.get("host_ip"), str(entry.get("published"))))
            continue
        parts = interpolate(str(entry)).rsplit(":", 2)
        if len(parts) == 3:
            ports.append((parts[0].strip("[]"), parts[1]))
        else:  # "8080" or "8080:8080": every interface
            ports.append((None, parts[0]))
    return ports


def test_dashboard_publishes_on_loopback_only() -> None:
    services = compose()["services"]
    dashboard = services["dashboard"]
    ports = published_ports(dashboard)
    assert ports, "the dashboard should publish its port"
    for name, service in services.items():
        for host_ip, port in published_ports(service):
            assert host_ip == "127.0.0.1", f"{name} publishes {port} beyond the loopback"
    args = parse_cli(as_list(dashboard["command"]) or [])
    assert args.host == "0.0.0.0", "inside the container the dashboard must bind 0.0.0.0"
    container_ports = [str(p).rsplit(":", 1)[-1] for p in dashboard["ports"]]
    assert str(args.port) in container_ports


def test_worker_scales() -> None:
    worker = compose()["services"]["worker"]
    assert "container_name" not in worker, "a fixed container_name prevents --scale"
    assert "ports" not in worker, "published ports prevent --scale"
    assert worker.get("deploy", {}).get("replicas") is None or "ports" not in worker


def test_postgres_is_healthy_before_workers() -> None:
    services = compose()["services"]
    postgres = services["postgres"]
    assert is_pinned(postgres["image"]) and postgres["image"].startswith("postgres:")
    test = postgres["healthcheck"]["test"]
    assert "pg_isready" in (test if isinstance(test, str) else " ".join(test))
    volumes = [str(v).split(":")[0] for v in postgres.get("volumes", [])]
    assert any(v in (compose().get("volumes") or {}) for v in volumes), "a named volume"
    for var in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"):
        assert re.fullmatch(r"\$\{" + var + r":-[^}]+\}", postgres["environment"][var]), var
    for name in ("worker", "dashboard", "train"):
        assert "postgres" in services[name].get("depends_on", {}), f"{name} needs postgres"
    for name, service in services.items():
        depends = service.get("depends_on", {})
        if "postgres" in depends:
            assert depends["postgres"]["condition"] == "service_healthy", name


def test_worker_storage_and_runs_volume() -> None:
    doc = compose()
    for name in ("worker", "train"):
        service = doc["services"][name]
        env = service["environment"]
        storage = env[cli.ENV_STORAGE]
        assert storage.startswith("postgresql+psycopg://") and "@postgres:5432/" in storage
        assert "${POSTGRES_PASSWORD" in storage, "the password is a variable, not a literal"
        pg = {k: interpolate(v) for k, v in doc["services"]["postgres"]["environment"].items()}
        expected = (
            f"postgresql+psycopg://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}"
            f"@postgres:5432/{pg['POSTGRES_DB']}"
        )
        assert interpolate(storage) == expected, f"{name}: the URL should match the database"
        runs_dir = env[cli.ENV_RUNS_DIR]
        targets = {str(v).split(":")[1]: str(v).split(":")[0] for v in service["volumes"]}
        assert runs_dir in targets, f"{name}: mount the shared volume at {runs_dir}"
        assert targets[runs_dir] in doc["volumes"], "a named volume, shared by the workers"


def test_train_is_a_one_shot_under_a_profile() -> None:
    train = compose()["services"]["train"]
    assert train.get("profiles"), "the final run must not start with a plain `up`"
    assert train.get("restart", "no") == "no"


# --- Kubernetes: secrets ---------------------------------------------------------------------


def test_k8s_storage_comes_from_the_secret() -> None:
    secrets = {d["metadata"]["name"]: d for _, d in k8s_docs() if d["kind"] == "Secret"}
    for path, job in k8s_jobs():
        for c in pod_containers(job):
            env = {e["name"]: e for e in c.get("env", [])}
            assert cli.ENV_STORAGE in env, f"{path}: {c['name']} has no {cli.ENV_STORAGE}"
            entry = env[cli.ENV_STORAGE]
            assert "value" not in entry, f"{path}: the storage URL belongs in the Secret"
            ref = entry["valueFrom"]["secretKeyRef"]
            secret = secrets[ref["name"]]
            data = {**secret.get("data", {}), **secret.get("stringData", {})}
            assert ref["key"] in data, f"{path}: the Secret has no key {ref['key']!r}"


def test_no_password_in_k8s_jobs() -> None:
    placeholders = set()
    for _, doc in k8s_docs():
        if doc["kind"] == "Secret":
            for value in strings(doc.get("stringData", {})):
                placeholders |= {m.group(1) for m in URL_PASSWORD.finditer(value)}
    assert placeholders, "the Secret should hold a URL with a placeholder password"
    secret_text = (K8S / "secret.yaml").read_text(encoding="utf-8")
    assert re.search(r"#.*(placeholder|PLACEHOLDER)", secret_text), "say it is a placeholder"
    for path, job in k8s_jobs():
        for value in strings(job):
            assert not URL_PASSWORD.search(value), f"{path}: a password in {value!r}"
            assert not any(p in value for p in placeholders), f"{path}: {value!r}"
        for c in pod_containers(job):
            for e in c.get("env", []):
                if "PASSWORD" in e["name"].upper():
                    assert "secretKeyRef" in e.get("valueFrom", {}), f"{path}: {e['name']}"


def test_k8s_user_matches_the_image() -> None:
    user = [rest for k, rest in dockerfile() if k == "USER"][-1].split(":")[0]
    for path, job in k8s_jobs():
        context = job["spec"]["template"]["spec"]["securityContext"]
        assert str(context.get("runAsUser", user)) == user, path
