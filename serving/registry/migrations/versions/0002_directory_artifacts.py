"""Generative versions and directory artifacts: a version's task and format, and artifact files.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-08 09:00:00.000000

Existing versions keep NULL task, format, artifact kind (a single file) and file count.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ALTER TABLE ADD/DROP COLUMN on both databases (SQLite >= 3.35 drops columns natively):
    # a batch "recreate" of model_versions on SQLite would drop the table under the foreign keys of
    # aliases, tags and deployment records, and with foreign keys on that deletes their rows.
    op.add_column("model_versions", sa.Column("task", sa.String(length=64), nullable=True))
    op.add_column("model_versions", sa.Column("format", sa.String(length=32), nullable=True))
    op.add_column("model_versions", sa.Column("artifact_kind", sa.String(length=16), nullable=True))
    op.add_column("model_versions", sa.Column("artifact_file_count", sa.Integer(), nullable=True))

    op.create_table(
        "artifact_files",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("uploaded_by", sa.String(length=128), nullable=False),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["model_versions.id"],
            name=op.f("fk_artifact_files_version_id_model_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifact_files")),
        sa.UniqueConstraint("version_id", "path", name="uq_artifact_files_version_id_path"),
    )
    with op.batch_alter_table("artifact_files", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_artifact_files_version_id"), ["version_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("artifact_files", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_artifact_files_version_id"))

    op.drop_table("artifact_files")
    for column in ("artifact_file_count", "artifact_kind", "format", "task"):
        op.drop_column("model_versions", column)
