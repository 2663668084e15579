"""Column types shared by domains: exact decimals and exactly compared strings on every backend."""

from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Numeric, String, TypeDecorator
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeEngine


class ExactDecimal(TypeDecorator[Decimal]):
    """A fixed-point decimal that never passes through a float: NUMERIC(precision, scale) on
    PostgreSQL and MariaDB; on SQLite (whose NUMERIC is a float) a scaled integer, e.g. cents,
    which still sorts and compares correctly."""

    impl = Numeric
    cache_ok = True

    def __init__(self, precision: int, scale: int) -> None:
        super().__init__(precision=precision, scale=scale, asdecimal=True)
        self.precision = precision
        self.scale = scale
        self._unit = Decimal(1).scaleb(-scale)

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(self.precision, self.scale, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = Decimal(value).quantize(self._unit)
        if dialect.name == "sqlite":
            return int(value.scaleb(self.scale))
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return Decimal(int(value)).scaleb(-self.scale).quantize(self._unit)
        if isinstance(value, Decimal):  # NUMERIC(p, s) already comes back with s places
            return value
        return Decimal(value).quantize(self._unit)


def exact_string(length: int) -> String:
    """A VARCHAR compared byte for byte on every backend. MariaDB's default collations call
    "carol" and "càrol" (or "Carol") equal, in lookups and in unique indexes alike; SQLite and
    PostgreSQL already compare exactly."""
    return String(length).with_variant(
        mysql.VARCHAR(length, collation="utf8mb4_bin"), "mysql", "mariadb"
    )
