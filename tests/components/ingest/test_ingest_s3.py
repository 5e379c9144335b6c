"""The object-storage path: ingest straight from s3:// URLs served by a local S3-compatible server (moto)."""

import pandas as pd
import pytest

from components.ingest.config import IngestConfig
from components.ingest.ingest import ingest
from components.synth.synth import SynthConfig, synth
from pipelines.processes import free_ports


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    (port,) = free_ports(1)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    mp = pytest.MonkeyPatch()
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "FSSPEC_S3_ENDPOINT_URL": endpoint,
    }.items():
        mp.setenv(key, value)
    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket="raw")
    toy = synth(SynthConfig(out_dir=str(tmp_path_factory.mktemp("s3src") / "toy"), videos=2, images=1))
    for path in sorted(toy.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), "raw", f"toy/{path.relative_to(toy)}")
    client.put_object(Bucket="raw", Key="toy/videos/broken.mp4", Body=b"not a video at all")
    yield endpoint
    mp.undo()
    server.stop()


def test_ingest_from_s3_urls(s3, tmp_path):
    result = ingest(IngestConfig(inputs=("s3://raw/toy",), out_dir=str(tmp_path), progress=False))
    manifest = pd.read_parquet(tmp_path / "manifest.parquet")
    assert sorted(manifest.source) == [
        "s3://raw/toy/images/toy_0000.png",
        "s3://raw/toy/videos/toy_0000.mp4",
        "s3://raw/toy/videos/toy_0001.mp4",
    ]
    assert (manifest.num_frames > 1).sum() == 2
    assert result.quarantined == {"not_video": 1}
    again = ingest(IngestConfig(inputs=("s3://raw/toy/videos/*.mp4",), out_dir=str(tmp_path), progress=False))
    assert again.cached == 3
