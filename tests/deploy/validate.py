"""Schema validation of deploy/, run by tests/integration/deploy.rs in its own virtualenv.

    python validate.py k8s FILE...      every document of every file
    python validate.py compose FILE     a Compose file

Kubernetes objects are checked with kubernetes-validate in strict mode (unknown fields
are errors) against each Kubernetes version in K8S_VERSIONS. A ServiceMonitor is a
prometheus-operator custom resource that kubernetes-validate has no schema for (it only
warns), nor for a PrometheusRule; both are validated explicitly against the
prometheus-operator CRD models of cloudcoil-models-prometheus-operator (generated from the
CRDs: field types, enums and duration patterns), and must survive the round trip
unchanged, which catches unknown or misspelt fields. A kind with no schema at all is an error, never a silent pass. A
kustomization.yaml is not an API object: it is checked to list exactly the other files
but the KEK Secret.
A Compose file is parsed by compose-spec (the validating compose_spec library).

On success prints {"documents": [{"file": ..., "doc": ...}, ...]} (the parsed YAML, for
the Rust test's cross-checks) and exits 0; otherwise prints every problem to stderr and
exits 1.
"""

import json
import pathlib
import sys

import yaml

K8S_VERSIONS = ["1.30.0", "1.37.0"]

# prometheus-operator custom resources, validated against its CRD models.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}

# Manifests deliberately not in kustomization.yaml: the KEK Secret is created by hand, and
# re-applying its placeholder would overwrite the real key.
NOT_IN_KUSTOMIZATION = {"secret.yaml"}


def validate_k8s(doc, where, problems):
    import kubernetes_validate.utils as kv

    kind = doc.get("kind")
    if kind in CRD_KINDS:
        validate_custom_resource(doc, where, problems)
        return
    for version in K8S_VERSIONS:
        try:
            kv.validate(doc, version, strict=True)
        except kv.SchemaNotFoundError:
            problems.append(f"{where}: no schema for {doc.get('apiVersion')} {kind} in Kubernetes {version}")
        except kv.ValidationError as e:
            path = "/".join(str(p) for p in e.path)
            problems.append(f"{where}: Kubernetes {version}: {path}: {e.message}")
        except kv.InvalidSchemaError as e:
            problems.append(f"{where}: {e}")


def validate_custom_resource(doc, where, problems):
    from cloudcoil.models.prometheus_operator import v1 as po

    kind = doc["kind"]
    if doc.get("apiVersion") != "monitoring.coreos.com/v1":
        problems.append(f"{where}: {kind} must be monitoring.coreos.com/v1")
        return
    model_class = getattr(po, kind)
    try:
        model = model_class.model_validate(doc)
    except Exception as e:  # pydantic.ValidationError, with every field path
        problems.append(f"{where}: {kind} does not match the CRD: {e}")
        return
    back = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    for path in differences(doc, back):
        problems.append(f"{where}: {kind} field {path} is not in the CRD (or changed type)")


def differences(a, b, path=""):
    """Paths where `a` (the file) and `b` (the validated round trip) differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            if k not in b or k not in a:
                out.append(f"{path}.{k}")
            else:
                out.extend(differences(a[k], b[k], f"{path}.{k}"))
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [path]
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out.extend(differences(x, y, f"{path}[{i}]"))
        return out
    return [] if a == b else [path or "."]


def check_kustomization(doc, file, all_files, problems):
    listed = doc.get("resources", [])
    here = sorted(
        p.name
        for p in all_files
        if p.parent == file.parent
        and p.name != file.name
        and p.name not in NOT_IN_KUSTOMIZATION
    )
    if sorted(listed) != here:
        problems.append(f"{file}: resources {sorted(listed)} must list exactly {here}")
    for key in doc:
        if key not in ("apiVersion", "kind", "resources", "labels", "namespace", "images"):
            problems.append(f"{file}: unexpected kustomization key {key}")


def main(argv):
    mode, files = argv[1], [pathlib.Path(f) for f in argv[2:]]
    problems, documents = [], []
    for file in files:
        try:
            text = file.read_text()
        except OSError as e:
            problems.append(f"{file}: {e}")
            continue
        if mode == "compose":
            from compose_spec import PyCompose

            try:
                PyCompose.from_yaml(text)
            except Exception as e:
                problems.append(f"{file}: not a valid Compose file: {e}")
            documents.append({"file": str(file), "doc": yaml.safe_load(text)})
            continue
        try:
            docs = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as e:
            problems.append(f"{file}: {e}")
            continue
        if not docs:
            problems.append(f"{file}: no YAML document")
        for i, doc in enumerate(docs):
            where = f"{file}[{i}] {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            if doc.get("kind") == "Kustomization":
                check_kustomization(doc, file, files, problems)
            else:
                validate_k8s(doc, where, problems)
            documents.append({"file": str(file), "doc": doc})
    if problems:
        for p in problems:
            print(p, file=sys.stderr)
        return 1
    print(json.dumps({"documents": documents}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
