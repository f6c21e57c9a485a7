"""A promoting process for the fault tests: run as a subprocess, it creates a version and/or promotes one with the
real Registry on a real store, and SIGKILLs itself at a chosen point (``--kill-at``).

    python crash_worker.py --store URL --kill-at before-manifest --file delta.safetensors=/tmp/d --promote

Kill points (the process dies just before the named write reaches the store):

* ``after-claim``      the version id is claimed (claim.json), no model file written
* ``after-some-files`` the first model file is written, the others are not
* ``before-manifest``  every model file is written, the manifest is not
* ``mid-manifest``     LocalStore only: the manifest's temp file is written and fsynced, not yet linked into place
* ``before-pointer``   the version is complete (manifest written), the champion pointer not moved
* ``before-history``   the pointer moved, the history entry not appended
* ``after-promote``    the promotion is complete (pointer and history), the post-promotion check never ran
* ``none``             run to the end

``--expected-etag`` / ``--start-at`` make two workers race on a promotion: each promotes against the etag the test read
beforehand, starting at the same wall-clock instant. The outcome is printed as one JSON line on stdout.

For S3 the endpoint comes from SKILLGRAFT_S3_ENDPOINT_URL and the credentials from the AWS environment, exactly as for
the ``skillgraft`` command. Only the registry and the store are imported (no torch): the worker starts in about a second.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from skillgraft.refs import BatchRef, Manifest
from skillgraft.registry import PromotionConflict, Registry
from skillgraft.store import LocalStore, ObjectStore, open_store

KILL_POINTS = (
    "after-claim",
    "after-some-files",
    "before-manifest",
    "mid-manifest",
    "before-pointer",
    "before-history",
    "after-promote",
    "none",
)


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class KillSwitch:
    """Wraps a store and SIGKILLs the process just before the write the kill point names."""

    def __init__(self, inner: ObjectStore, point: str, model_files: list[str]) -> None:
        self.inner, self.url, self.point = inner, inner.url, point
        self.model_files = model_files
        self.written: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def put_new(self, key: str, data: bytes) -> None:
        name = key.rsplit("/", 1)[-1]
        if "/versions/" in key and name in self.model_files:
            if self.point == "after-claim" or (self.point == "after-some-files" and self.written):
                die()
            self.written.append(name)
        if self.point == "before-manifest" and name == "manifest.json":
            die()
        self.inner.put_new(key, data)

    def replace_if(self, key: str, data: bytes, expected: str | None) -> bool:
        if (self.point == "before-pointer" and key.endswith("/champion.json")) or (
            self.point == "before-history" and key.endswith("/history.jsonl")
        ):
            die()
        return self.inner.replace_if(key, data, expected)


def arm_mid_manifest(store: ObjectStore) -> None:
    """LocalStore writes a temp file, fsyncs it, then links it into place: die between the two for the manifest."""
    if not isinstance(store, LocalStore):
        raise SystemExit("mid-manifest is a LocalStore kill point")
    original = store._tmp

    def tmp(*args: Any) -> str:  # (path, data), or (key, path, data): whatever LocalStore._tmp takes
        written = original(*args)
        path = next(a for a in args if isinstance(a, Path))
        if path.name == "manifest.json":
            die()
        return written

    store._tmp = tmp  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", required=True)
    p.add_argument("--model", default="demo")
    p.add_argument("--kill-at", choices=KILL_POINTS, default="none")
    p.add_argument("--file", action="append", default=[], help="NAME=PATH, a model file of the new version")
    p.add_argument("--tasks", default="first", help="comma-separated tasks the new version knows")
    p.add_argument(
        "--batch", action="append", default=[], help="a BatchRef as JSON: data the new version was trained on"
    )
    p.add_argument("--promote", action="store_true", help="promote the new version after creating it")
    p.add_argument("--promote-version", help="promote this existing version (no new version)")
    p.add_argument("--expected-etag", help="the champion etag to promote against ('none': there was no champion)")
    p.add_argument("--start-at", type=float, help="wait until this time.time() before promoting (races)")
    p.add_argument("--actor", default="crash-worker")
    args = p.parse_args(argv)

    files = {name: Path(path).read_bytes() for name, path in (f.split("=", 1) for f in args.file)}
    inner = open_store(args.store)
    if args.kill_at == "mid-manifest":
        arm_mid_manifest(inner)
    store = KillSwitch(inner, args.kill_at, sorted(files))
    reg = Registry(store, args.model, actor=args.actor)  # type: ignore[arg-type]

    pointer, etag = reg.champion_with_etag()
    if args.expected_etag is not None:
        etag = None if args.expected_etag == "none" else args.expected_etag
    version = args.promote_version
    if files:
        parent = pointer.version if pointer else None
        info = reg.info()
        assert info is not None, "the model must be registered by the test"
        manifest = Manifest(model=args.model, version="pending", parent=parent, base=info.base,
                            recipe={"kind": "sa_proj"}, tasks=args.tasks.split(","),
                            batches=[BatchRef.model_validate_json(b) for b in args.batch])  # fmt: skip
        version = reg.create_version(files, manifest).version
    outcome: dict[str, Any] = {"version": version}
    if version and (args.promote or args.promote_version):
        if args.start_at is not None:
            time.sleep(max(0.0, args.start_at - time.time()))
        try:
            promoted = reg.promote(version, reason=f"promoted by {args.actor}", expected_etag=etag)
            outcome.update(outcome="promoted", champion=promoted.version)
            if args.kill_at == "after-promote":  # where a run would go on to the post-promotion check
                die()
        except PromotionConflict as e:
            # What steps.promote does with a conflict: the candidate is recorded as superseded, nothing else moves.
            winner = e.current.version if e.current else None
            reg.record("superseded", version, reason=f"champion moved to {winner} first")
            outcome.update(outcome="superseded", champion=winner)
    print(json.dumps(outcome), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
