"""Dagster's run pods get the resources, security context and identity helm-values/dagster.yaml
promises, computed the way dagster-k8s computes them; and every finpipe pod satisfies the
`restricted` Pod Security profile.

The Dagster chart cannot be downloaded here, so two of its helpers are restated (from the
chart's templates, dagster 1.13): `dagsterYaml.runLauncher.k8s` (the K8sRunLauncher config in
dagster.yaml) and `dagsterUserDeployments.k8sContainerContext` (the container context a code
location passes to its runs when includeConfigInLaunchedRuns is on). Everything after that is
dagster-k8s itself: its config schema, ``K8sContainerContext.create_for_run`` (launcher
config, then the location's context merged over it, then run tags) and
``construct_dagster_k8s_job``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes
import kubernetes_validate
import pytest
import yaml
from pod_security import restricted_violations

RELEASE = "dagster"
NAMESPACE = "finpipe"
DAGSTER_HOME = "/opt/dagster/dagster_home"
# Only for constructing the launcher (it loads a kube config); nothing connects.
KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
    "users": [{"name": "u", "user": {}}],
    "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
    "current-context": "x",
}


def run_launcher_config(values: dict[str, Any], kubeconfig: Path) -> dict[str, Any]:
    """The chart's `dagsterYaml.runLauncher.k8s` helper (only kubeconfig differs: no cluster)."""
    rl = values["runLauncher"]["config"]["k8sRunLauncher"]
    cfg: dict[str, Any] = {
        "load_incluster_config": False,
        "kubeconfig_file": str(kubeconfig),
        "job_namespace": rl.get("jobNamespace") or NAMESPACE,
        "image_pull_policy": rl["imagePullPolicy"],
        "service_account_name": RELEASE,
        "dagster_home": DAGSTER_HOME,
        "instance_config_map": f"{RELEASE}-instance",
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
    }
    names = {"envConfigMaps": "env_config_maps", "envSecrets": "env_secrets"}
    for key, field in names.items():
        if rl.get(key):
            cfg[field] = [ref["name"] for ref in rl[key]]
    plain = {
        "envVars": "env_vars",
        "volumeMounts": "volume_mounts",
        "volumes": "volumes",
        "labels": "labels",
        "resources": "resources",
        "schedulerName": "scheduler_name",
        "securityContext": "security_context",
    }
    for key, field in plain.items():
        if rl.get(key):
            cfg[field] = rl[key]
    if rl.get("failPodOnRunFailure"):
        cfg["fail_pod_on_run_failure"] = True
    run = rl.get("runK8sConfig") or {}
    sections = {
        "containerConfig": "container_config",
        "podSpecConfig": "pod_spec_config",
        "podTemplateSpecMetadata": "pod_template_spec_metadata",
        "jobSpecConfig": "job_spec_config",
        "jobMetadata": "job_metadata",
    }
    if run:
        cfg["run_k8s_config"] = {field: run[key] for key, field in sections.items() if run.get(key)}
    return cfg


def location_container_context(
    values: dict[str, Any], deployment: dict[str, Any]
) -> dict[str, Any]:
    """The chart's `dagsterUserDeployments.k8sContainerContext` helper for one location."""
    k8s: dict[str, Any] = {
        "image_pull_policy": deployment["image"]["pullPolicy"],
        "env_config_maps": [
            f"{RELEASE}-dagster-user-deployments-{deployment['name']}-user-env",
            *(ref["name"] for ref in deployment.get("envConfigMaps", [])),
        ],
        "namespace": NAMESPACE,
        "service_account_name": f"{RELEASE}-dagster-user-deployments-user-deployments",
        # The chart always lets run pods mount their service account token.
        "run_k8s_config": {
            "pod_spec_config": {
                "automount_service_account_token": True,
            },
        },
    }
    if deployment.get("envSecrets"):
        k8s["env_secrets"] = [ref["name"] for ref in deployment["envSecrets"]]
    plain = {
        "volumeMounts": "volume_mounts",
        "volumes": "volumes",
        "labels": "labels",
        "resources": "resources",
        "schedulerName": "scheduler_name",
    }
    for key, field in plain.items():
        if deployment.get(key):
            k8s[field] = deployment[key]
    if isinstance(deployment.get("env"), list) and deployment["env"]:
        k8s["env"] = deployment["env"]
    if deployment.get("annotations"):
        k8s["run_k8s_config"]["pod_template_spec_metadata"] = {
            "annotations": deployment["annotations"]
        }
    return {"k8s": k8s}


def image_of(deployment: dict[str, Any]) -> str:
    image = deployment["image"]
    if image.get("digest"):
        return f"{image['repository']}@{image['digest']}"
    return f"{image['repository']}:{image['tag']}"


def run_job(values: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """The Kubernetes Job K8sRunLauncher would create for a run of the code location."""
    from dagster._config import process_config
    from dagster._core.code_pointer import ModuleCodePointer
    from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
    from dagster._core.storage.dagster_run import DagsterRun
    from dagster_k8s import K8sRunLauncher
    from dagster_k8s.job import construct_dagster_k8s_job

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(KUBECONFIG))
    processed = process_config(
        K8sRunLauncher.config_type(), run_launcher_config(values, kubeconfig)
    )
    assert processed.success, processed.errors
    launcher = K8sRunLauncher.from_config_value(None, processed.value)

    (deployment,) = values["dagster-user-deployments"]["deployments"]
    args = deployment["dagsterApiGrpcArgs"]
    image = image_of(deployment)
    origin = JobPythonOrigin(
        "stock_tasks_job",
        RepositoryPythonOrigin(
            executable_path="python",
            code_pointer=ModuleCodePointer(args[args.index("-m") + 1], "defs", None),
            container_image=image,
            entry_point=["dagster"],
            container_context=location_container_context(values, deployment),
        ),
    )
    run = DagsterRun(job_name="stock_tasks_job", run_id="0" * 8 + "-run", job_code_origin=origin)
    context = launcher.get_container_context_for_run(run)
    job = construct_dagster_k8s_job(
        job_config=context.get_k8s_job_config(job_image=image, run_launcher=launcher),
        args=["dagster", "api", "execute_run", "{}"],
        job_name="dagster-run-probe",
        pod_name="dagster-run-probe",
        component="run_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/job": "stock_tasks_job"},
        env_vars=[{"name": "DAGSTER_RUN_JOB_NAME", "value": "stock_tasks_job"}],
    )
    return kubernetes.client.ApiClient().sanitize_for_serialization(job)


@pytest.fixture(scope="module")
def job(dagster_values, tmp_path_factory) -> dict[str, Any]:
    return run_job(dagster_values, tmp_path_factory.mktemp("runs"))


def test_run_job_is_valid_kubernetes(job) -> None:
    kubernetes_validate.validate(job, kubernetes_validate.latest_version(), strict=True)


def test_run_pods_get_the_resources_the_launcher_promises(job, dagster_values) -> None:
    promised = dagster_values["runLauncher"]["config"]["k8sRunLauncher"]["resources"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["resources"] == promised


def test_the_location_resources_win_the_merge(dagster_values, tmp_path) -> None:
    """The mechanism the test above guards: dagster-k8s merges the location's resources over
    the launcher's, so a smaller location limit would shrink every run pod."""
    values = copy.deepcopy(dagster_values)
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    deployment["resources"] = {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"memory": "1Gi"},
    }
    (container,) = run_job(values, tmp_path)["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["memory"] == "1Gi"


def test_run_pods_satisfy_the_restricted_profile(job) -> None:
    pod = job["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    assert pod["securityContext"]["runAsUser"] != 0


def test_run_pods_are_the_manager(job, workers_values) -> None:
    """Runs connect as the manager's PostgreSQL login and Kafka user, trust the Kafka CA, and
    read the shared settings from the workers chart's ConfigMap."""
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["FINPIPE_PG_USER"]["value"] == "finpipe_manager_app"
    assert env["FINPIPE_PG_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "finpipe-pg-manager"
    user = workers_values["kafka"]["managerUser"]["name"]
    assert env["FINPIPE_KAFKA_SASL_USERNAME"]["value"] == user
    assert env["FINPIPE_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": user,
        "key": "password",
    }
    config_maps = {s["configMapRef"]["name"] for s in container["envFrom"] if "configMapRef" in s}
    assert workers_values["configMapName"] in config_maps
    ca_path = Path(workers_values["config"]["kafka_ssl_ca_location"])
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    volume = volumes[mounts[str(ca_path.parent)]]
    assert volume["secret"]["secretName"] == workers_values["kafka"]["caSecret"]["name"]
    assert {"key": workers_values["kafka"]["caSecret"]["key"], "path": ca_path.name} in volume[
        "secret"
    ]["items"]


def test_a_run_without_security_context_breaks_the_profile(dagster_values, tmp_path) -> None:
    """The checker is not vacuous: the launcher without its securityContext fails it."""
    values = copy.deepcopy(dagster_values)
    del values["runLauncher"]["config"]["k8sRunLauncher"]["securityContext"]
    pod = run_job(values, tmp_path)["spec"]["template"]["spec"]
    problems = restricted_violations(pod)
    assert any("allowPrivilegeEscalation" in p for p in problems), problems
    assert any("capabilities" in p for p in problems), problems


def _dagster_pod(
    values: dict[str, Any],
    pod_sc: dict[str, Any],
    sc: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    container = {"name": "c", "image": "i", "securityContext": sc, **(extra or {})}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe"},
        "spec": {"securityContext": pod_sc, "containers": [container]},
    }


def test_dagster_pods_satisfy_the_restricted_profile(dagster_values) -> None:
    """The code location, webserver and daemon pods (their security contexts, as the chart
    sets them on the pod and the container) pass the same checks, and the Kubernetes parts
    of the location's values are valid objects."""
    (deployment,) = dagster_values["dagster-user-deployments"]["deployments"]
    location = _dagster_pod(
        dagster_values,
        deployment["podSecurityContext"],
        deployment["securityContext"],
        {
            "env": deployment["env"],
            "volumeMounts": deployment["volumeMounts"],
            "resources": deployment["resources"],
        },
    )
    location["spec"]["volumes"] = deployment["volumes"]
    kubernetes_validate.validate(location, kubernetes_validate.latest_version(), strict=True)
    pods = {"code location": location}
    for name in ("dagsterWebserver", "dagsterDaemon"):
        part = dagster_values[name]
        pods[name] = _dagster_pod(
            dagster_values, part["podSecurityContext"], part["securityContext"]
        )
    for name, pod in pods.items():
        kubernetes_validate.validate(pod, kubernetes_validate.latest_version(), strict=True)
        assert restricted_violations(pod["spec"]) == [], name


def test_worker_pods_satisfy_the_restricted_profile(rendered) -> None:
    sets = [o for o in rendered if o["kind"] == "StatefulSet"]
    assert sets
    for sts in sets:
        assert restricted_violations(sts["spec"]["template"]["spec"]) == [], sts["metadata"]["name"]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda p: p["securityContext"].pop("seccompProfile"), "seccompProfile"),
        (lambda p: p["securityContext"].update(runAsNonRoot=False), "runAsNonRoot"),
        (lambda p: p["containers"][0]["securityContext"].update(privileged=True), "privileged"),
        (lambda p: p["volumes"].append({"name": "h", "hostPath": {"path": "/"}}), "hostPath"),
        (lambda p: p.update(hostNetwork=True), "hostNetwork"),
    ],
)
def test_restricted_checker_catches(rendered, mutate, expected) -> None:
    sts = next(o for o in rendered if o["kind"] == "StatefulSet")
    pod = copy.deepcopy(sts["spec"]["template"]["spec"])
    mutate(pod)
    assert any(expected in p for p in restricted_violations(pod))
