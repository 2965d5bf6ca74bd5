"""Conditions on any column of the items table: ``COLUMN=VALUE``, ``COLUMN>=NUMBER``, ``COLUMN<=NUMBER``.

A :class:`Condition` is parsed from the text a user types (the command line's ``--where``, the
app's filter widgets make the same value) and evaluated on the items table as a row mask. The
filter that carries conditions into every backend is :class:`imgsim.index.backend.Filter`.

Equality on a text column compares text exactly (leading and trailing spaces dropped); on a
numeric column, numbers (``price=10`` matches ``10.0``). ``>=`` and ``<=`` need a numeric column,
or a text column whose every non-empty value reads as a number (a CSV's price stored as text).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re

import numpy as np
import pandas as pd

from imgsim.errors import ImgsimError

#: Columns of the items table that are bookkeeping, not product facts: never filterable.
INTERNAL_COLUMNS = frozenset({"status", "message", "thumb", "thumb_path", "sha256", "source", "added_at", "row"})

_SYNTAX = re.compile(r"^\s*([^=<>]+?)\s*(>=|<=|=)\s*(.*?)\s*$", re.DOTALL)


class FilterError(ImgsimError, ValueError):
    """A condition names a column the catalogue lacks, or a value the column cannot hold."""


class Op(enum.StrEnum):
    """How a column's value is compared with the condition's."""

    EQ = "="
    GE = ">="
    LE = "<="


def filterable_columns(items: pd.DataFrame) -> list[str]:
    """The columns of ``items`` a condition may name, in table order."""
    return [str(c) for c in items.columns if str(c) not in INTERNAL_COLUMNS]


def numeric_values(column: pd.Series) -> np.ndarray | None:
    """``column`` as float64 (NaN where empty), or None when some non-empty value is not a number."""
    if pd.api.types.is_bool_dtype(column):
        return None
    if pd.api.types.is_numeric_dtype(column):
        return column.to_numpy(dtype=np.float64, na_value=np.nan)
    text = column.astype("string").str.strip()
    empty = text.isna() | (text == "")
    values = pd.to_numeric(text.where(~empty), errors="coerce")
    if bool((values.isna() & ~empty).any()) or bool(empty.all()):
        return None
    return values.to_numpy(dtype=np.float64, na_value=np.nan)


@dataclasses.dataclass(frozen=True)
class Condition:
    """One condition on one column.

    Attributes:
        column: A column of the items table (see :func:`filterable_columns`).
        op: ``=``, ``>=`` or ``<=``.
        value: The text to compare with (a number's text for ``>=`` and ``<=``).
    """

    column: str
    op: Op
    value: str

    def __post_init__(self) -> None:
        if not isinstance(self.column, str) or not self.column.strip():
            raise FilterError(f"a condition needs a column name. Received: column={self.column!r}")
        if not isinstance(self.value, str):
            raise FilterError(f"a condition's value must be text. Received: value={self.value!r}")
        object.__setattr__(self, "column", self.column.strip())
        object.__setattr__(self, "op", Op(self.op))
        object.__setattr__(self, "value", self.value.strip())
        if self.op is not Op.EQ and _number(self.value) is None:
            raise FilterError(f"{self.column}{self.op.value} needs a number. Received: {self.value!r}")

    @classmethod
    def parse(cls, text: str) -> Condition:
        """``"colour=Blue"``, ``"price>=10"`` or ``"price<=99.5"`` as a condition.

        Raises:
            FilterError: The text is not ``COLUMN=VALUE``, ``COLUMN>=NUMBER`` or ``COLUMN<=NUMBER``.
        """
        match = _SYNTAX.match(text) if isinstance(text, str) else None
        if match is None:
            raise FilterError("a filter must read COLUMN=VALUE, COLUMN>=NUMBER or COLUMN<=NUMBER. "
                              f"Received: {text!r}")
        return cls(match.group(1), Op(match.group(2)), match.group(3))

    def __str__(self) -> str:
        return f"{self.column}{self.op.value}{self.value}"

    def mask(self, items: pd.DataFrame) -> np.ndarray:
        """``(N,)`` bool: the rows of ``items`` that meet the condition (empty values never do).

        Raises:
            FilterError: No such column (the message lists the columns), a comparison on a
                column that is not numeric, or an equality no item meets (a value the column
                does not hold is a typo, not an empty answer).
        """
        columns = filterable_columns(items)
        if self.column not in columns:
            raise FilterError(f"the catalogue has no column {self.column!r}; "
                              f"its columns are: {', '.join(columns)}")
        series = items[self.column]
        numbers = numeric_values(series)
        if self.op is Op.EQ:
            wanted = _number(self.value)
            if numbers is not None and wanted is not None:
                mask = numbers == wanted
            else:
                mask = (series.astype("string").str.strip() == self.value).fillna(False).to_numpy(dtype=bool)
            if not mask.any():
                raise FilterError(f"no item has {self.column} = {self.value!r}")
            return mask
        if numbers is None:
            raise FilterError(f"{self.column} is not a numeric column, so {self.column}{self.op.value} "
                              "cannot compare it; use =")
        bound = float(self.value)
        with np.errstate(invalid="ignore"):
            return (numbers >= bound) if self.op is Op.GE else (numbers <= bound)


def column_choices(items: pd.DataFrame, max_values: int = 40,
                   skip: tuple[str, ...] = ("id", "name", "category")) -> dict[str, tuple]:
    """What a filter form offers for each column: a range for numbers, choices for few values.

    Args:
        items: The items table.
        max_values: A text column with more distinct values than this (names, ids) is left out.
        skip: Columns left out (the category has its own picker).

    Returns:
        ``{column: ("range", low, high)}`` for numeric columns with more than one value, and
        ``{column: ("choices", value, ...)}`` (sorted, non-empty) for text columns with 2 to
        ``max_values`` values.
    """
    out: dict[str, tuple] = {}
    for column in filterable_columns(items):
        if column in skip:
            continue
        numbers = numeric_values(items[column])
        if numbers is not None:
            finite = numbers[np.isfinite(numbers)]
            if len(finite) and finite.min() < finite.max():
                out[column] = ("range", float(finite.min()), float(finite.max()))
            continue
        values = sorted({v.strip() for v in items[column].astype("string").dropna() if v.strip()})
        if 2 <= len(values) <= max_values:
            out[column] = ("choices", *values)
    return out


def _number(text: str) -> float | None:
    """``text`` as a finite float, or None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def conditions_mask(conditions: tuple[Condition, ...], items: pd.DataFrame) -> np.ndarray | None:
    """``(N,)`` bool: the rows that meet every condition (None when there are none)."""
    mask = None
    for condition in conditions:
        one = condition.mask(items)
        mask = one if mask is None else mask & one
    return mask
