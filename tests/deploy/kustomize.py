"""A tiny Kustomize renderer for the features ``deploy/k8s`` uses, so the manifests render offline.

No pip-installable Kustomize runs on Python 3.11, and ``kubectl kustomize`` is not on every
machine; this renders what our kustomizations use, and ``tests/deploy/test_manifests.py``
compares it with ``kubectl kustomize`` where kubectl exists. Supported:

- ``resources``: YAML files (several documents each) and directories holding a kustomization;
- ``namespace``: set on every resource (all of ours are namespaced);
- ``labels`` with ``pairs`` only (added to ``metadata.labels``, not to selectors or templates);
- ``images``: ``name`` with ``newName`` and/or ``newTag``, in every container of a pod template;
- ``replicas``: ``name`` and ``count`` of a Deployment;
- ``patches`` with ``path``: strategic merge patches matched by kind and name (maps merge; lists
  of maps merge on ``name``, or ``topologyKey`` for topology spread constraints, the patch's
  items first as kustomize orders them; other lists are replaced).

Anything else raises, so an unsupported field cannot be silently ignored.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]
SUPPORTED = {
    "apiVersion",
    "kind",
    "resources",
    "namespace",
    "labels",
    "images",
    "replicas",
    "patches",
}


def load_documents(path: Path) -> list[Resource]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def render(directory: Path) -> list[Resource]:
    """The resources ``kubectl kustomize directory`` would print (in file order)."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(spec) - SUPPORTED
    if unknown:
        raise ValueError(f"{directory}: unsupported kustomization fields {sorted(unknown)}")
    resources: list[Resource] = []
    for entry in spec.get("resources", []):
        path = (directory / entry).resolve()
        resources += render(path) if path.is_dir() else load_documents(path)
    for patch_entry in spec.get("patches", []):
        if set(patch_entry) != {"path"}:
            raise ValueError(f"{directory}: only patches with a path are supported")
        for patch in load_documents(directory / patch_entry["path"]):
            target = _find(resources, patch["kind"], patch["metadata"]["name"])
            merged = strategic_merge(target, patch)
            target.clear()
            target.update(merged)
    for item in spec.get("replicas", []):
        _find(resources, "Deployment", item["name"])["spec"]["replicas"] = item["count"]
    for image in spec.get("images", []):
        for resource in resources:
            for container in _containers(resource):
                _set_image(container, image)
    for label in spec.get("labels", []):
        if set(label) != {"pairs"}:
            raise ValueError(f"{directory}: only labels with pairs are supported")
        for resource in resources:
            resource["metadata"].setdefault("labels", {}).update(label["pairs"])
    if "namespace" in spec:
        for resource in resources:
            resource["metadata"]["namespace"] = spec["namespace"]
    return resources


MERGE_KEYS = {"topologySpreadConstraints": "topologyKey"}
"""Lists merged on a key other than ``name`` (their patchMergeKey in the Kubernetes API)."""


def strategic_merge(base: Any, patch: Any, field: str = "") -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = copy.deepcopy(base)
        for key, value in patch.items():
            merged[key] = strategic_merge(base[key], value, key) if key in base else value
        return merged
    merge_key = MERGE_KEYS.get(field, "name")
    if isinstance(base, list) and isinstance(patch, list) and _keyed(base + patch, merge_key):
        # As kustomize orders them: the patch's items (merged with the base's of the same
        # key) in the patch's order, then the base's other items.
        by_key = {item[merge_key]: item for item in base}
        merged_list = [
            strategic_merge(by_key[item[merge_key]], item)
            if item[merge_key] in by_key
            else copy.deepcopy(item)
            for item in patch
        ]
        patched = {item[merge_key] for item in patch}
        merged_list += [copy.deepcopy(item) for item in base if item[merge_key] not in patched]
        return merged_list
    return copy.deepcopy(patch)


def _keyed(items: list[Any], key: str) -> bool:
    return bool(items) and all(isinstance(i, dict) and key in i for i in items)


def _find(resources: list[Resource], kind: str, name: str) -> Resource:
    for resource in resources:
        if resource["kind"] == kind and resource["metadata"]["name"] == name:
            return resource
    raise ValueError(f"no {kind} {name} to patch")


def _containers(resource: Resource) -> list[dict[str, Any]]:
    pod = resource.get("spec", {}).get("template", {}).get("spec", {})
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def _set_image(container: dict[str, Any], image: dict[str, str]) -> None:
    current = container.get("image", "")
    name, _, tag = current.partition(":")
    if name != image["name"]:
        return
    name = image.get("newName", name)
    tag = image.get("newTag", tag)
    container["image"] = f"{name}:{tag}" if tag else name
