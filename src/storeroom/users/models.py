"""Users: the accounts table."""

import secrets

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from storeroom.core.db import NEVER_REUSE_IDS, Base, TimestampMixin
from storeroom.core.types import exact_string

TOKEN_KEY_BYTES = 16


def new_token_key() -> str:
    return secrets.token_hex(TOKEN_KEY_BYTES)


class User(TimestampMixin, Base):
    __tablename__ = "users"
    __table_args__ = NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(primary_key=True)
    # Stored lower-cased, so the unique index makes addresses unique in any letter case, and
    # compared exactly otherwise: "càrol@" is not "carol@" on MariaDB either.
    email: Mapped[str] = mapped_column(exact_string(254), unique=True)
    hashed_password: Mapped[str] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(default=True)
    is_superuser: Mapped[bool] = mapped_column(default=False)
    # Carried in every token issued to this account and compared on every use: a token names
    # this account as it is now, not merely an id. Changing the password or email, or
    # deactivating the account, draws a new key, which ends every session opened before.
    token_key: Mapped[str] = mapped_column(String(2 * TOKEN_KEY_BYTES), default=new_token_key)
