"""Saving plain state trees (filter states, pending work): arrays to safetensors, the rest to JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

_MARK = "__array__"


def _split(node, arrays: dict[str, np.ndarray], prefix: str):
    if isinstance(node, np.ndarray):
        arrays[prefix] = np.ascontiguousarray(node)
        return {_MARK: prefix}
    if isinstance(node, dict):
        return {k: _split(v, arrays, f"{prefix}/{k}") for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_split(v, arrays, f"{prefix}/{i}") for i, v in enumerate(node)]
    return node


def _join(node, arrays: dict[str, np.ndarray]):
    if isinstance(node, dict):
        if set(node) == {_MARK}:
            return arrays[node[_MARK]]
        return {k: _join(v, arrays) for k, v in node.items()}
    if isinstance(node, list):
        return [_join(v, arrays) for v in node]
    return node


def save_tree(path: Path, tree: dict) -> None:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    (path / "state.json").write_text(json.dumps(_split(tree, arrays, "")))
    save_file(arrays, str(path / "arrays.safetensors"))


def load_tree(path: Path) -> dict | None:
    path = Path(path)
    if not (path / "state.json").exists():
        return None
    return _join(json.loads((path / "state.json").read_text()), load_file(str(path / "arrays.safetensors")))
