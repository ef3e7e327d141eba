"""Initial schema: every table of ARCHITECTURE.md's data model.

Revision ID: 0001
Revises: 
Create Date: 2026-11-27 10:48:45.044461
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import service.models


revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('api_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('token_sha256', sa.String(length=64), nullable=False),
    sa.Column('role', sa.Enum('operator', 'editor', name='role', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('created_at', service.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_used_at', service.models.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens')),
    sa.UniqueConstraint('name', name=op.f('uq_api_tokens_name')),
    sa.UniqueConstraint('token_sha256', name=op.f('uq_api_tokens_token_sha256'))
    )
    op.create_table('posts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('url', sa.String(length=2000), nullable=False),
    sa.Column('guid', sa.String(length=2000), nullable=False),
    sa.Column('title', sa.String(length=1000), nullable=False),
    sa.Column('summary_html', sa.Text(), nullable=False),
    sa.Column('author', sa.String(length=300), nullable=True),
    sa.Column('published_at', service.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('first_seen_at', service.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', service.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_posts')),
    sa.UniqueConstraint('url', name=op.f('uq_posts_url'))
    )
    op.create_index(op.f('ix_posts_first_seen_at'), 'posts', ['first_seen_at'], unique=False)
    op.create_index(op.f('ix_posts_guid'), 'posts', ['guid'], unique=False)
    op.create_index(op.f('ix_posts_published_at'), 'posts', ['published_at'], unique=False)
    op.create_table('provider_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('event_id', sa.String(length=300), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('received_at', service.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_provider_events')),
    sa.UniqueConstraint('provider', 'event_id', name=op.f('uq_provider_events_provider_event_id'))
    )
    op.create_table('schedules',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('cadence', sa.Enum('instant', 'daily', 'weekly', name='cadence', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('weekday', sa.Integer(), nullable=True),
    sa.Column('send_time', sa.Time(), nullable=False),
    sa.Column('template', sa.String(length=100), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('created_at', service.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_schedules')),
    sa.UniqueConstraint('name', name=op.f('uq_schedules_name'))
    )
    op.create_table('sources',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('url', sa.String(length=2000), nullable=False),
    sa.Column('title', sa.String(length=500), nullable=True),
    sa.Column('categories_as_tags', sa.Boolean(), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('interval_seconds', sa.Integer(), nullable=False),
    sa.Column('etag', sa.String(length=1000), nullable=True),
    sa.Column('last_modified', sa.String(length=200), nullable=True),
    sa.Column('body_hash', sa.String(length=64), nullable=True),
    sa.Column('next_poll_at', service.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_polled_at', service.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('first_polled_at', service.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('consecutive_errors', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', service.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sources')),
    sa.UniqueConstraint('url', name=op.f('uq_sources_url'))
    )
    op.create_index(op.f('ix_sources_next_poll_at'), 'sources', ['next_poll_at'], unique=False)
    op.create_table('subscribers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('status', sa.Enum('pending', 'active', 'unsubscribed', 'bounced', 'complained', 'erased', name='subscriber_status', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('timezone', sa.String(length=64), nullable=False),
    sa.Column('send_hour', sa.Integer(), nullable=True),
    sa.Column('breaking_alerts', sa.Boolean(), nullable=False),
    sa.Column('consented_at', service.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('consent_source', sa.String(length=200), nullable=True),
    sa.Column('created_at', service.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', service.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_subscribers'))
    )
    op.create_index(op.f('ix_subscribers_status'), 'subscribers', ['status'], unique=False)
    op.create_index('uq_subscribers_email_lower', 'subscribers', [sa.literal_column('lower(email)')], unique=True)
    op.create_table('suppressions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('email_hash', sa.String(length=64), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=True),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('created_at', service.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_suppressions')),
    sa.UniqueConstraint('email_hash', name=op.f('uq_suppressions_email_hash'))
    )
    op.create_table('tags',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('slug', sa.String(length=100), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('created_at', service.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tags')),
    sa.UniqueConstraint('slug', name=op.f('uq_tags_slug'))
    )
    op.create_table('editions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.Enum('digest', 'breaking', 'instant', name='edition_kind', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('schedule_id', sa.Integer(), nullable=True),
    sa.Column('post_id', sa.Integer(), nullable=True),
    sa.Column('period_start', service.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('period_end', service.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('subject', sa.String(length=500), nullable=True),
    sa.Column('status', sa.Enum('planned', 'sending', 'done', 'cancelled', name='edition_status', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('planned', sa.Integer(), nullable=False),
    sa.Column('sent', sa.Integer(), nullable=False),
    sa.Column('failed', sa.Integer(), nullable=False),
    sa.Column('skipped', sa.Integer(), nullable=False),
    sa.Column('suppressed', sa.Integer(), nullable=False),
    sa.Column('unknown', sa.Integer(), nullable=False),
    sa.Column('created_at', service.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('finished_at', service.models.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['post_id'], ['posts.id'], name=op.f('fk_editions_post_id_posts'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['schedule_id'], ['schedules.id'], name=op.f('fk_editions_schedule_id_schedules'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_editions')),
    sa.UniqueConstraint('key', name=op.f('uq_editions_key'))
    )
    op.create_index(op.f('ix_editions_post_id'), 'editions', ['post_id'], unique=False)
    op.create_index(op.f('ix_editions_schedule_id'), 'editions', ['schedule_id'], unique=False)
    op.create_index(op.f('ix_editions_status'), 'editions', ['status'], unique=False)
    op.create_table('post_tags',
    sa.Column('post_id', sa.Integer(), nullable=False),
    sa.Column('tag_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['post_id'], ['posts.id'], name=op.f('fk_post_tags_post_id_posts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tag_id'], ['tags.id'], name=op.f('fk_post_tags_tag_id_tags'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('post_id', 'tag_id', name=op.f('pk_post_tags'))
    )
    op.create_index(op.f('ix_post_tags_tag_id'), 'post_tags', ['tag_id'], unique=False)
    op.create_table('source_items',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('source_id', sa.Integer(), nullable=False),
    sa.Column('guid', sa.String(length=2000), nullable=False),
    sa.Column('post_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['post_id'], ['posts.id'], name=op.f('fk_source_items_post_id_posts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['source_id'], ['sources.id'], name=op.f('fk_source_items_source_id_sources'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_source_items')),
    sa.UniqueConstraint('source_id', 'guid', name=op.f('uq_source_items_source_id_guid'))
    )
    op.create_index(op.f('ix_source_items_post_id'), 'source_items', ['post_id'], unique=False)
    op.create_table('source_tags',
    sa.Column('source_id', sa.Integer(), nullable=False),
    sa.Column('tag_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['source_id'], ['sources.id'], name=op.f('fk_source_tags_source_id_sources'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tag_id'], ['tags.id'], name=op.f('fk_source_tags_tag_id_tags'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('source_id', 'tag_id', name=op.f('pk_source_tags'))
    )
    op.create_table('subscriptions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('subscriber_id', sa.Integer(), nullable=False),
    sa.Column('tag_id', sa.Integer(), nullable=False),
    sa.Column('cadence', sa.Enum('instant', 'daily', 'weekly', name='cadence', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('created_at', service.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['subscriber_id'], ['subscribers.id'], name=op.f('fk_subscriptions_subscriber_id_subscribers'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tag_id'], ['tags.id'], name=op.f('fk_subscriptions_tag_id_tags'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_subscriptions')),
    sa.UniqueConstraint('subscriber_id', 'tag_id', name=op.f('uq_subscriptions_subscriber_id_tag_id'))
    )
    op.create_index(op.f('ix_subscriptions_tag_id'), 'subscriptions', ['tag_id'], unique=False)
    op.create_table('deliveries',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('edition_id', sa.Integer(), nullable=False),
    sa.Column('subscriber_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.Enum('queued', 'sending', 'sent', 'failed', 'skipped', 'suppressed', 'unknown', name='delivery_status', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('backend', sa.String(length=32), nullable=True),
    sa.Column('message_id', sa.String(length=300), nullable=True),
    sa.Column('provider_id', sa.String(length=300), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('claimed_at', service.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('sent_at', service.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', service.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['edition_id'], ['editions.id'], name=op.f('fk_deliveries_edition_id_editions'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['subscriber_id'], ['subscribers.id'], name=op.f('fk_deliveries_subscriber_id_subscribers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deliveries')),
    sa.UniqueConstraint('edition_id', 'subscriber_id', name=op.f('uq_deliveries_edition_id_subscriber_id'))
    )
    op.create_index('ix_deliveries_edition_id_status', 'deliveries', ['edition_id', 'status'], unique=False)
    op.create_index(op.f('ix_deliveries_subscriber_id'), 'deliveries', ['subscriber_id'], unique=False)
    op.create_table('delivered_posts',
    sa.Column('subscriber_id', sa.Integer(), nullable=False),
    sa.Column('post_id', sa.Integer(), nullable=False),
    sa.Column('delivery_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('delivered_at', service.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['delivery_id'], ['deliveries.id'], name=op.f('fk_delivered_posts_delivery_id_deliveries'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['post_id'], ['posts.id'], name=op.f('fk_delivered_posts_post_id_posts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['subscriber_id'], ['subscribers.id'], name=op.f('fk_delivered_posts_subscriber_id_subscribers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('subscriber_id', 'post_id', name=op.f('pk_delivered_posts'))
    )
    op.create_index(op.f('ix_delivered_posts_post_id'), 'delivered_posts', ['post_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_delivered_posts_post_id'), table_name='delivered_posts')
    op.drop_table('delivered_posts')
    op.drop_index(op.f('ix_deliveries_subscriber_id'), table_name='deliveries')
    op.drop_index('ix_deliveries_edition_id_status', table_name='deliveries')
    op.drop_table('deliveries')
    op.drop_index(op.f('ix_subscriptions_tag_id'), table_name='subscriptions')
    op.drop_table('subscriptions')
    op.drop_table('source_tags')
    op.drop_index(op.f('ix_source_items_post_id'), table_name='source_items')
    op.drop_table('source_items')
    op.drop_index(op.f('ix_post_tags_tag_id'), table_name='post_tags')
    op.drop_table('post_tags')
    op.drop_index(op.f('ix_editions_status'), table_name='editions')
    op.drop_index(op.f('ix_editions_schedule_id'), table_name='editions')
    op.drop_index(op.f('ix_editions_post_id'), table_name='editions')
    op.drop_table('editions')
    op.drop_table('tags')
    op.drop_table('suppressions')
    op.drop_index('uq_subscribers_email_lower', table_name='subscribers')
    op.drop_index(op.f('ix_subscribers_status'), table_name='subscribers')
    op.drop_table('subscribers')
    op.drop_index(op.f('ix_sources_next_poll_at'), table_name='sources')
    op.drop_table('sources')
    op.drop_table('schedules')
    op.drop_table('provider_events')
    op.drop_index(op.f('ix_posts_published_at'), table_name='posts')
    op.drop_index(op.f('ix_posts_guid'), table_name='posts')
    op.drop_index(op.f('ix_posts_first_seen_at'), table_name='posts')
    op.drop_table('posts')
    op.drop_table('api_tokens')
