"""The SOQL subset the sync needs: field lists, WHERE with AND/OR/NOT, comparison, IN, LIKE,
date-time/date literals, ORDER BY (several keys, ASC/DESC, NULLS FIRST/LAST), LIMIT, OFFSET."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.emulators.salesforce import ids, timefmt
from services.emulators.salesforce.errors import SfError
from services.emulators.salesforce.schema import FieldDef, SObjectDef, sobject

_TOKEN_RE = re.compile(
    r"""\s*(?:
        (?P<str>'(?:[^'\\]|\\.)*')
      | (?P<dt>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}))
      | (?P<date>\d{4}-\d{2}-\d{2})
      | (?P<num>-?\d+(?:\.\d+)?)
      | (?P<op><=|>=|!=|<>|=|<|>|\(|\)|,)
      | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
    )""",
    re.VERBOSE,
)
KEYWORDS = {"SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "LIKE", "ORDER", "BY", "ASC", "DESC", "LIMIT",
            "OFFSET", "NULLS", "FIRST", "LAST", "NULL", "TRUE", "FALSE", "INCLUDES", "EXCLUDES"}


def malformed(msg: str) -> SfError:
    return SfError(400, "MALFORMED_QUERY", msg)


@dataclass
class Tok:
    kind: str
    value: str


@dataclass
class Query:
    sobject: SObjectDef
    fields: list[FieldDef]
    where: Callable[[Callable[[FieldDef], Any]], bool] | None = None
    order: list[tuple[FieldDef, bool, bool]] = field(default_factory=list)  # field, desc, nulls_first
    limit: int | None = None
    offset: int = 0
    count_only: bool = False  # SELECT COUNT() FROM ...


def tokenize(text: str) -> list[Tok]:
    out: list[Tok] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if not m or m.end() == pos:
            raise malformed(f"unexpected token: '{text[pos:pos + 20].strip()}'")
        kind = m.lastgroup or ""
        value = m.group(kind)
        if kind == "word" and value.upper() in KEYWORDS:
            kind, value = "kw", value.upper()
        out.append(Tok(kind, value))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = tokenize(text)
        self.i = 0
        self.sobj: SObjectDef | None = None

    def peek(self, kind: str | None = None, value: str | None = None) -> Tok | None:
        if self.i >= len(self.toks):
            return None
        t = self.toks[self.i]
        if (kind and t.kind != kind) or (value and t.value != value):
            return None
        return t

    def take(self, kind: str | None = None, value: str | None = None) -> Tok:
        t = self.peek(kind, value)
        if t is None:
            got = self.toks[self.i].value if self.i < len(self.toks) else "end of query"
            raise malformed(f"unexpected token: '{got}', expected {value or kind}")
        self.i += 1
        return t

    def field(self, name: str) -> FieldDef:
        assert self.sobj is not None
        f = self.sobj.field(name)
        if f is None:
            raise SfError(400, "INVALID_FIELD",
                          f"No such column '{name}' on entity '{self.sobj.name}'. If you are attempting to use a "
                          "custom field, be sure to append the '__c' after the custom field name.")
        return f

    def parse(self) -> Query:
        self.take("kw", "SELECT")
        count_only = False
        names: list[str] = []
        if self.peek("word", "COUNT") or self.peek("word", "count"):
            self.take()
            self.take("op", "(")
            self.take("op", ")")
            count_only = True
        else:
            names.append(self.take("word").value)
            while self.peek("op", ","):
                self.take()
                names.append(self.take("word").value)
        self.take("kw", "FROM")
        name = self.take("word").value
        self.sobj = sobject(name)
        if self.sobj is None:
            raise SfError(400, "INVALID_TYPE", f"sObject type '{name}' is not supported.")
        q = Query(self.sobj, [self.field(n) for n in names], count_only=count_only)
        if self.peek("kw", "WHERE"):
            self.take()
            q.where = self.expr()
        if self.peek("kw", "ORDER"):
            self.take()
            self.take("kw", "BY")
            while True:
                f = self.field(self.take("word").value)
                desc = False
                if self.peek("kw", "ASC") or self.peek("kw", "DESC"):
                    desc = self.take().value == "DESC"
                nulls_first = not desc
                if self.peek("kw", "NULLS"):
                    self.take()
                    nulls_first = self.take("kw").value == "FIRST"
                q.order.append((f, desc, nulls_first))
                if not self.peek("op", ","):
                    break
                self.take()
        if self.peek("kw", "LIMIT"):
            self.take()
            q.limit = int(self.take("num").value)
        if self.peek("kw", "OFFSET"):
            self.take()
            q.offset = int(self.take("num").value)
        if self.i != len(self.toks):
            raise malformed(f"unexpected token: '{self.toks[self.i].value}'")
        return q

    Pred = Callable[[Callable[[FieldDef], Any]], bool]

    def expr(self) -> Pred:
        left = self.conj()
        while self.peek("kw", "OR"):
            self.take()
            right = self.conj()
            left = (lambda a, b: lambda get: a(get) or b(get))(left, right)
        return left

    def conj(self) -> Pred:
        left = self.unary()
        while self.peek("kw", "AND"):
            self.take()
            right = self.unary()
            left = (lambda a, b: lambda get: a(get) and b(get))(left, right)
        return left

    def unary(self) -> Pred:
        if self.peek("kw", "NOT"):
            self.take()
            inner = self.unary()
            return lambda get: not inner(get)
        if self.peek("op", "("):
            self.take()
            e = self.expr()
            self.take("op", ")")
            return e
        return self.comparison()

    def comparison(self) -> Pred:
        f = self.field(self.take("word").value)
        negate = False
        if self.peek("kw", "NOT"):
            self.take()
            negate = True
        t = self.take()
        if t.kind == "kw" and t.value == "IN":
            self.take("op", "(")
            values = [self.literal(f)]
            while self.peek("op", ","):
                self.take()
                values.append(self.literal(f))
            self.take("op", ")")
            pool = set(values)
            return lambda get: (_norm(f, get(f)) in pool) != negate
        if negate:
            raise malformed("NOT must be followed by IN")
        if t.kind == "kw" and t.value == "LIKE":
            pattern = self.literal(f)
            rx = re.compile("^" + re.escape(str(pattern)).replace("%", ".*").replace("_", ".") + "$", re.I | re.S)
            return lambda get: get(f) is not None and bool(rx.match(str(get(f))))
        if t.kind != "op" or t.value in ("(", ")", ","):
            raise malformed(f"unexpected token: '{t.value}'")
        op = "!=" if t.value == "<>" else t.value
        value = self.literal(f)
        return lambda get: _compare(op, _norm(f, get(f)), value)

    def literal(self, f: FieldDef) -> Any:
        t = self.take()
        if t.kind == "kw" and t.value == "NULL":
            return None
        if t.kind == "kw" and t.value in ("TRUE", "FALSE"):
            if f.type != "boolean":
                raise malformed(f"value of filter criterion for field '{f.name}' must be of type {f.type}")
            return t.value == "TRUE"
        if f.type == "datetime":
            if t.kind != "dt":
                raise malformed(f"value of filter criterion for field '{f.name}' must be of type dateTime "
                                "and should not be enclosed in quotes")
            return timefmt.parse_datetime(t.value)
        if f.type == "date":
            if t.kind != "date":
                raise malformed(f"value of filter criterion for field '{f.name}' must be of type date "
                                "and should not be enclosed in quotes")
            return t.value
        if t.kind == "num":
            if f.type not in ("int", "double"):
                raise malformed(f"value of filter criterion for field '{f.name}' must be of type {f.type}")
            return float(t.value)
        if t.kind != "str":
            raise malformed(f"unexpected token: '{t.value}'")
        s = re.sub(r"\\(.)", r"\1", t.value[1:-1])
        if f.type in ("id", "reference") and ids.is_valid(s):
            return ids.to18(s)
        if f.type in ("int", "double", "boolean"):
            raise malformed(f"value of filter criterion for field '{f.name}' must be of type {f.type}")
        return s.lower() if f.type in _TEXT else s


_TEXT = ("string", "textarea", "email", "phone", "picklist")


def _norm(f: FieldDef, v: Any) -> Any:
    if v is None:
        return None
    if f.type == "datetime":
        return timefmt.parse_datetime(v)
    if f.type in ("int", "double"):
        return float(v)
    if f.type in _TEXT:
        # SOQL string comparison is case-insensitive.
        return str(v).lower()
    return v


def _compare(op: str, a: Any, b: Any) -> bool:
    if op == "=":
        return bool(a == b)
    if op == "!=":
        return bool(a != b)
    if a is None or b is None:
        return False
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)


def parse(text: str) -> Query:
    return _Parser(text).parse()


def apply_order(rows: list[Any], order: list[tuple[FieldDef, bool, bool]],
                getter: Callable[[Any, FieldDef], Any]) -> list[Any]:
    # Stable sorts from the last key to the first give a multi-key order with mixed directions.
    for f, desc, nulls_first in reversed(order):
        present = [r for r in rows if getter(r, f) is not None]
        nulls = [r for r in rows if getter(r, f) is None]
        def key(r: Any, f: FieldDef = f) -> Any:
            return _norm(f, getter(r, f))

        present.sort(key=key, reverse=desc)
        rows = nulls + present if nulls_first else present + nulls
    return rows
