"""The store a flow run works on: opened from the config, with S3 credentials from a Prefect block when one is named."""

from __future__ import annotations

from prefect.blocks.core import Block

from skillgraft.config import SkillgraftConfig
from skillgraft.store import ObjectStore, open_store


def store_for(cfg: SkillgraftConfig) -> ObjectStore:
    """``cfg.store``; with ``cfg.credentials_block`` ('aws-credentials/<name>' or 'minio-credentials/<name>'), its
    S3 client (credentials, region, endpoint from the block's client parameters) instead of the AWS chain."""
    if cfg.credentials_block is None:
        return open_store(cfg.store)
    if not cfg.store.startswith("s3://"):
        raise ValueError(
            f"credentials_block {cfg.credentials_block!r} is set but the store {cfg.store!r} is not s3://: "
            "remove the block or point store at s3://<bucket>/<prefix>"
        )
    if "/" not in cfg.credentials_block:
        raise ValueError(
            f"credentials_block {cfg.credentials_block!r}: give '<block-type>/<name>', e.g. aws-credentials/prod"
        )
    block = Block.load(cfg.credentials_block)
    if not hasattr(block, "get_client"):
        raise ValueError(f"block {cfg.credentials_block!r} is a {type(block).__name__}, not AWS/MinIO credentials")
    return open_store(cfg.store, s3_client=block.get_client("s3"))
