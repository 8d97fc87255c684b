"""A local Cloud Storage emulator (the `gcp-storage-emulator` package) for gs:// workdir tests.

`start(port)` runs the emulator in its own process on 127.0.0.1 with one
bucket; `environment(port)` is what points every client of a run at it:
TensorStore (Orbax's arrays), gcsfs through etils.epath (Orbax's folders and
commit markers, metrics.jsonl, config.json, outputs) and google-cloud-storage
(tensorboardX's event files).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

BUCKET = "vdt-test"

# The emulator omits the x-goog-generation header real Cloud Storage sends with every download;
# TensorStore reads an object's generation from it (Orbax's OCDBT manifest), so the server adds it.
_SERVER = """
import sys, time
from gcp_storage_emulator.handlers import objects

def download(request, response, storage, *args, **kwargs):
    original_download(request, response, storage, *args, **kwargs)
    try:
        obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
    except Exception:
        return
    response["x-goog-generation"] = str(obj["generation"])
    response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))

original_download, objects.download = objects.download, download
from gcp_storage_emulator.server import create_server  # its routes take the patched download
server = create_server("127.0.0.1", int(sys.argv[1]), in_memory=True, default_bucket=sys.argv[2])
server.start()
while True:
    time.sleep(3600)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(port: int, timeout: float = 60.0) -> subprocess.Popen:
    """The emulator process, once it answers; the caller kills it."""
    process = subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(port), BUCKET], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            list_objects(port, "")
            return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"the storage emulator did not answer on port {port} within {timeout} s")


def environment(port: int) -> dict[str, str]:
    url = f"http://127.0.0.1:{port}"
    return {
        "STORAGE_EMULATOR_HOST": url,  # gcsfs and google-cloud-storage
        "TENSORSTORE_GCS_HTTP_URL": url,
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",  # TensorStore: no credentials lookup
        "GOOGLE_CLOUD_PROJECT": "vdt-test",
        "EPATH_USE_TF": "false",  # etils.epath: gcsfs (TensorFlow's GCS client ignores emulators)
    }


def list_objects(port: int, prefix: str) -> list[str]:
    """Object names under `prefix` in the bucket (the JSON API, paging through every result)."""
    names, token = [], ""
    while True:
        query = f"prefix={prefix}" + (f"&pageToken={token}" if token else "")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/storage/v1/b/{BUCKET}/o?{query}", timeout=30) as reply:
            page = json.load(reply)
        names += [item["name"] for item in page.get("items", [])]
        token = page.get("nextPageToken", "")
        if not token:
            return names


def read_object(port: int, name: str) -> bytes:
    quoted = urllib.request.quote(name, safe="")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/storage/v1/b/{BUCKET}/o/{quoted}?alt=media", timeout=30) as reply:
        return reply.read()
