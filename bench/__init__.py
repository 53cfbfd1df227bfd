"""seeder's benchmark: cold, warm and verify against wget, curl, aria2c, huggingface_hub and sha256sum.

    .venv/bin/python bench/run.py                 # everything; writes docs/benchmarks.md and docs/benchmarks.png
    .venv/bin/python -m bench                     # the same, from the repository root
    .venv/bin/python bench/run.py --runs 1 --only seeder,aria2c --no-write   # a quick look
    .venv/bin/python -m bench --runs 1 --only s3 --no-write                  # the shared S3 cache only
    .venv/bin/python -m bench --only hf-cache       # filling an HF cache only; rewrites only its section of the page
    .venv/bin/python -m bench --only oci            # pull and push through a local OCI registry only

A local server on 127.0.0.1 (tests/fakehub.py: the fake Hugging Face hub, in this process) serves the
hub API, repo files and plain URLs, capping every connection (default 50 MB/s) and, like the link
behind a CDN, all connections together (default 8 x the per-connection cap). Content is generated
(random bytes, so no layer can compress or deduplicate it) in the sizes of the default manifest: a
~91 MB safetensors repo plus its small files, and a ~669 MB GGUF by URL. Every tool fetches the same
files; each timing is the median of --runs runs (wall clock, process start to exit). See
docs/benchmarks.md for what each row means.

Needs: wget, curl, aria2 (Debian packages: installed with apt-get when missing and root), matplotlib
(for the chart: pip-installed into this interpreter when missing). Docker and the repository's
Dockerfile + docker-compose.yml are optional: without them that part is skipped with a note. So is the
shared S3 cache part (a 1 GiB bucket read against boto3, and 1, 2, 4 nodes sharing one origin fetch): it
needs boto3 and SeaweedFS's `weed` (seeder's test dependencies; tests/seaweed.py starts it); --no-s3 skips it.
The HF cache part fills an HF_HOME from the same server with seeder (`layout = "hf-cache"`) and with
huggingface_hub's snapshot_download, and has huggingface_hub read each result offline; --no-hf-cache skips it.
The OCI part pulls and pushes one 1 GiB model through a local registry (Debian's docker-registry), seeder
against oras-py and skopeo, and pushes the unchanged set again; --no-oci skips it.
--only with parts alone runs just those and puts their sections into the existing page (bench/page.py).
"""
