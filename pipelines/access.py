"""Users and permissions of the MLflow server, which runs MLflow's authentication (`mlflow server --app-name
basic-auth`): every request needs a user. Everyone may read (the server's default permission); the pipeline's
identity may also write runs and register versions of the project's model, and moves its aliases; only the admin
may delete.

`provision` is what an operator runs once (and again to rotate passwords): it creates or updates the users, creates
the registered model as the admin (so that no other user can claim its name and, with it, MANAGE), and grants the
pipeline EDIT on it and on the experiments that exist. The local services (pipelines.services) call it too.
`t2v pipeline users` is its command line.
"""

from __future__ import annotations

from collections.abc import Iterable

from components.common.registry import MODEL_NAME

PIPELINE_PERMISSION = "EDIT"  # runs, versions, tags, aliases, descriptions; not deleting
TIMEOUT_S = 10.0


class AccessError(RuntimeError):
    """The server refused an administrative request."""


def _call(uri: str, admin: tuple[str, str], method: str, path: str, **kwargs) -> dict | None:
    """One REST call as the admin; None for 404 and for what exists already, AccessError for any other failure."""
    import requests

    response = requests.request(method, f"{uri.rstrip('/')}{path}", auth=admin, timeout=TIMEOUT_S, **kwargs)
    if response.status_code == 404:
        return None
    if response.status_code == 401:
        raise AccessError(f"{uri} refused the admin credentials (401): check the admin's username and password")
    if response.status_code == 400 and "RESOURCE_ALREADY_EXISTS" in response.text:
        return None
    if not response.ok:
        raise AccessError(f"{method} {path} on {uri} failed ({response.status_code}): {response.text[:500]}")
    return response.json() if response.content else {}


def set_user(uri: str, admin: tuple[str, str], username: str, password: str) -> bool:
    """Create `username` with `password`, or set the password of an existing user (rotation); True if created."""
    if _call(uri, admin, "GET", "/api/2.0/mlflow/users/get", params={"username": username}) is None:
        _call(uri, admin, "POST", "/api/2.0/mlflow/users/create", json={"username": username, "password": password})
        return True
    body = {"username": username, "password": password}
    _call(uri, admin, "PATCH", "/api/2.0/mlflow/users/update-password", json=body)
    return False


def grant(uri: str, admin: tuple[str, str], username: str, resource_type: str, resource_id: str, level: str) -> None:
    """Give `username` permission `level` on a resource; a permission already given stays as it is."""
    body = {"username": username, "resource_type": resource_type, "resource_id": resource_id, "permission": level}
    _call(uri, admin, "POST", "/api/3.0/mlflow/users/permissions/grant", json=body)


def provision(
    uri: str,
    admin: tuple[str, str],
    pipeline: tuple[str, str],
    readers: Iterable[tuple[str, str]] = (),
    model: str = MODEL_NAME,
) -> None:
    """Users `pipeline` and `readers` (username, password) with those passwords; the registered model `model`,
    owned by the admin, which the pipeline may EDIT; EDIT for the pipeline on every experiment that exists (those it
    creates later it manages). Safe to run again."""
    for username, password in (pipeline, *readers):
        if username == admin[0]:
            raise ValueError(f"user {username!r} is the admin: give the pipeline and the readers their own names")
        set_user(uri, admin, username, password)
    if _call(uri, admin, "GET", "/api/2.0/mlflow/registered-models/get", params={"name": model}) is None:
        _call(uri, admin, "POST", "/api/2.0/mlflow/registered-models/create", json={"name": model})
    grant(uri, admin, pipeline[0], "registered_model", model, PIPELINE_PERMISSION)
    token = None
    while True:
        body = {"max_results": 1000, **({"page_token": token} if token else {})}
        page = _call(uri, admin, "POST", "/api/2.0/mlflow/experiments/search", json=body) or {}
        for experiment in page.get("experiments", []):
            grant(uri, admin, pipeline[0], "experiment", experiment["experiment_id"], PIPELINE_PERMISSION)
        token = page.get("next_page_token")
        if not token:
            return
