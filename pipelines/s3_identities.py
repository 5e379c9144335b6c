"""Who may do what in which bucket of the local S3 server: the identities of SeaweedFS's identities file (`weed
mini -s3.config FILE`), laid out as on a cluster (docs/cluster.md, "Who holds which keys"). The MLflow server alone
holds keys to MLflow's artifact bucket; the pipeline's tasks and DVC hold keys to the DVC bucket only, so a task's keys
cannot write or delete the files of a registered model version (tasks reach those through the MLflow server, which
proxies artifacts); an admin identity, used by pipelines.services itself, creates the buckets."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path

REGION = "us-east-1"  # SeaweedFS ignores it; S3 clients need one to sign requests
BUCKET_ACTIONS = ("Read", "Write", "List")  # per bucket: get and head, put and delete, list
ADMIN_ACTIONS = ("Admin", "Read", "Write", "List", "Tagging")  # every bucket, and creating buckets


@dataclass(frozen=True)
class S3Identity:
    """One S3 identity: its name, the buckets it may read, write and list (empty: an admin of every bucket) and its
    keys, generated per instance."""

    name: str
    buckets: tuple[str, ...] = ()
    access_key: str = field(default_factory=lambda: secrets.token_hex(10), repr=False)
    secret_key: str = field(default_factory=lambda: secrets.token_hex(20), repr=False)

    @property
    def actions(self) -> list[str]:
        """SeaweedFS's actions for it: `Action:bucket` for each of its buckets, or the unscoped admin actions."""
        if not self.buckets:
            return list(ADMIN_ACTIONS)
        return [f"{action}:{bucket}" for bucket in self.buckets for action in BUCKET_ACTIONS]

    def env(self) -> dict[str, str]:
        """Its keys as boto3, s3fs and MLflow's S3 store read them from the environment."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def client(self, endpoint: str):
        """A boto3 S3 client of `endpoint` signing as this identity, with short timeouts and no retries."""
        import boto3
        from botocore.config import Config

        config = Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 1})
        return boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=REGION,
            config=config,
        )


def write_config(path: Path, identities: list[S3Identity]) -> Path:
    """SeaweedFS's identities file at `path` (it holds secret keys: readable by its owner only). With it, a request
    must be signed by one of these identities and is refused (AccessDenied) outside that identity's actions."""
    if len({identity.name for identity in identities}) != len(identities):
        raise ValueError(f"S3 identities {[i.name for i in identities]}: each needs a name of its own")
    config = {
        "identities": [
            {
                "name": identity.name,
                "credentials": [{"accessKey": identity.access_key, "secretKey": identity.secret_key}],
                "actions": identity.actions,
            }
            for identity in identities
        ]
    }
    path = Path(path)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(json.dumps(config, indent=2))
    return path
